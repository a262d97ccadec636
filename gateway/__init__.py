"""cognito-gateway: an authenticating reverse proxy for Amazon Cognito user pools."""

__version__ = "0.1.0"
