"""HTML for the hosted-UI pages. Every value placed in a page goes through ``html.escape``."""

from __future__ import annotations

from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;background:#f2f3f3;margin:0;color:#16191f}
main{max-width:380px;margin:48px auto;background:#fff;padding:28px 32px;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.15)}
h1{font-size:20px;margin:0 0 18px}label{display:block;font-size:14px;margin:12px 0 4px}
input[type=text],input[type=password],input[type=email]{width:100%;box-sizing:border-box;padding:8px;
border:1px solid #aab7b8;border-radius:4px;font-size:15px}
button{margin-top:18px;width:100%;padding:10px;background:#ec7211;color:#fff;border:0;border-radius:4px;
font-size:15px;cursor:pointer}.error{background:#fde7e9;color:#b0090b;padding:8px 10px;border-radius:4px;font-size:14px}
.note{font-size:13px;color:#545b64;margin-top:16px}.banner{background:#fff3cd;color:#664d03;font-size:12px;
text-align:center;padding:6px}a{color:#0073bb}
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        "<div class=banner>dev_idp: a development identity provider. Not for production.</div>"
        f"<main>{body}</main></body></html>"
    )


def _error(message: str | None) -> str:
    return f"<p class=error role=alert id=error>{escape(message)}</p>" if message else ""


def login_page(*, action: str, csrf: str, error: str | None, username: str = "", signup_url: str) -> str:
    return page(
        "Sign in",
        f"<h1>Sign in with your username and password</h1>{_error(error)}"
        f'<form method=post action="{escape(action)}" name=cognitoSignInForm>'
        f'<input type=hidden name=_csrf value="{escape(csrf)}">'
        "<label for=signInFormUsername>Username</label>"
        f'<input id=signInFormUsername name=username type=text autocomplete=username value="{escape(username)}" '
        "autofocus required>"
        "<label for=signInFormPassword>Password</label>"
        "<input id=signInFormPassword name=password type=password autocomplete=current-password required>"
        "<button id=signInSubmitButton type=submit name=signInSubmitButton>Sign in</button></form>"
        f'<p class=note>Need an account? <a id=signUpLink href="{escape(signup_url)}">Sign up</a></p>',
    )


def signup_page(*, action: str, csrf: str, error: str | None, username: str = "", email: str = "") -> str:
    return page(
        "Sign up",
        f"<h1>Sign up with a new account</h1>{_error(error)}"
        f'<form method=post action="{escape(action)}" name=cognitoSignUpForm>'
        f'<input type=hidden name=_csrf value="{escape(csrf)}">'
        f'<label for=username>Username</label><input id=username name=username type=text value="{escape(username)}" '
        "required>"
        f'<label for=email>Email</label><input id=email name=email type=email value="{escape(email)}" required>'
        "<label for=password>Password</label><input id=password name=password type=password "
        "autocomplete=new-password required>"
        "<button id=signUpButton type=submit>Sign up</button></form>"
        "<p class=note>Passwords need at least 8 characters.</p>",
    )


def confirm_page(*, action: str, csrf: str, error: str | None, username: str) -> str:
    return page(
        "Confirm your account",
        f"<h1>Confirm your account</h1>{_error(error)}"
        "<p class=note>We have sent a code by email. (dev_idp writes it to its log instead.)</p>"
        f'<form method=post action="{escape(action)}" name=cognitoConfirmForm>'
        f'<input type=hidden name=_csrf value="{escape(csrf)}">'
        f'<label for=username>Username</label><input id=username name=username type=text value="{escape(username)}" '
        "required>"
        "<label for=code>Verification code</label><input id=code name=code type=text inputmode=numeric "
        "autocomplete=one-time-code required>"
        "<button id=confirmButton type=submit>Confirm account</button></form>",
    )


def error_page(error: str) -> str:
    return page(
        "Error",
        f"<h1>An error was encountered with the requested page.</h1><p class=error id=error>{escape(error)}</p>",
    )


def index_page(*, issuer: str, discovery: str) -> str:
    return page(
        "dev_idp",
        "<h1>dev_idp</h1><p>A local identity provider that behaves like an Amazon Cognito user pool.</p>"
        f'<p class=note>Issuer: <code>{escape(issuer)}</code><br><a href="{escape(discovery)}">Discovery document</a></p>',
    )
