"""A Cognito user pool in moto's server mode: a third party's model of Cognito, to check we are not only
compatible with ourselves. moto serves the pool's JWKS over real HTTP and issues tokens through the admin API."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"
PASSWORD = "Alice-passw0rd!"


@dataclasses.dataclass(frozen=True)
class MotoPool:
    endpoint: str
    pool_id: str
    client_id: str
    id_token: str
    access_token: str

    @property
    def issuer(self) -> str:
        """moto's tokens carry the real AWS issuer, not the moto server's URL."""
        return f"https://cognito-idp.{REGION}.amazonaws.com/{self.pool_id}"

    @property
    def jwks_url(self) -> str:
        return f"{self.endpoint}/{self.pool_id}/.well-known/jwks.json"


@contextmanager
def moto_pool() -> Iterator[MotoPool]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        idp = boto3.client(
            "cognito-idp",
            region_name=REGION,
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        pool_id = idp.create_user_pool(PoolName="gateway-tests")["UserPool"]["Id"]
        client_id = idp.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName="gateway",
            ExplicitAuthFlows=["ADMIN_USER_PASSWORD_AUTH"],
            ReadAttributes=["email", "email_verified"],
        )["UserPoolClient"]["ClientId"]
        idp.create_group(UserPoolId=pool_id, GroupName="admins")
        idp.admin_create_user(
            UserPoolId=pool_id,
            Username="alice",
            TemporaryPassword="Tmp-passw0rd!",
            MessageAction="SUPPRESS",
            UserAttributes=[
                {"Name": "email", "Value": "alice@example.com"},
                {"Name": "email_verified", "Value": "true"},
            ],
        )
        idp.admin_set_user_password(UserPoolId=pool_id, Username="alice", Password=PASSWORD, Permanent=True)
        idp.admin_add_user_to_group(UserPoolId=pool_id, Username="alice", GroupName="admins")
        result = idp.admin_initiate_auth(
            UserPoolId=pool_id,
            ClientId=client_id,
            AuthFlow="ADMIN_USER_PASSWORD_AUTH",
            AuthParameters={"USERNAME": "alice", "PASSWORD": PASSWORD},
        )["AuthenticationResult"]
        yield MotoPool(endpoint, pool_id, client_id, result["IdToken"], result["AccessToken"])
    finally:
        server.stop()
