"""``python -m engine.admin``: make the secrets of RADBRIDGE_USERS_FILE.

::

    python -m engine.admin hash-password            # asks twice; prints a [[user]] entry
    python -m engine.admin new-token NAME ROLE      # prints the token once and a [[token]] entry
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from engine.admin.auth import ROLES, hash_password, hash_token, new_token
from engine.admin.policy import MIN_LENGTH, password_problem


def _hash_password(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    problem = password_problem(args.name, password)
    if problem is not None:
        print(f"refused: the password {problem} (at least {MIN_LENGTH} characters, not a "
              "common password, not containing the user name)", file=sys.stderr)
        return 1
    print(f'[[user]]\nname = "{args.name}"\nrole = "{args.role}"\n'
          f'password = "{hash_password(password)}"')
    return 0


def _new_token(args: argparse.Namespace) -> int:
    token = new_token()
    print(f"# the token (shown once; give it to the client): {token}", file=sys.stderr)
    print(f'[[token]]\nname = "{args.name}"\nrole = "{args.role}"\nsha256 = "{hash_token(token)}"')
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    hp = sub.add_parser("hash-password", help="a [[user]] entry with a scrypt hash")
    hp.add_argument("--name", default="admin")
    hp.add_argument("--role", default="admin", choices=ROLES)
    hp.set_defaults(func=_hash_password)
    nt = sub.add_parser("new-token", help="a new API token and its [[token]] entry")
    nt.add_argument("name")
    nt.add_argument("role", choices=ROLES)
    nt.set_defaults(func=_new_token)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
