"""One credential policy for every admin user and API token, and constant-time comparison.

A password or token is *weak* when it

* is empty or only whitespace,
* is shorter than ``MIN_LENGTH`` (12) characters,
* is a common or vendor-default password (``COMMON_PASSWORDS``), also once digits and
  punctuation around it are stripped (``Password1``, ``admin123``, ``P@ssw0rd2024!``), or
* contains the user's (or token's) name, ignoring case.

``password_problem`` applies all of it to a secret we hold in clear (the environment's
admin password, the first-run password file, ``python -m engine.admin hash-password``).
Stored secrets are hashes: for them ``guesses`` lists what can be tried against the hash
(the list and the name's obvious variants); length and containment cannot be checked.
"""

from __future__ import annotations

import hmac
import string

MIN_LENGTH = 12
# The most common passwords of public breach lists, and the defaults of the products an
# imaging integration engine sits beside (PACS, interface engines, databases, Java keystores).
_COMMON = """
123 1234 12345 123456 1234567 12345678 123456789 1234567890 123456789012 0987654321
111111 000000 121212 123123 654321 666666 696969 112233 159753 147258369
password passw0rd p@ssw0rd p@ssword pa55word pass pass123 password1 password123 passwort
motdepasse contrasena qwerty qwertz azerty qwerty123 qwertyuiop asdfgh asdfghjkl zxcvbnm
1q2w3e4r 1q2w3e4r5t 1qaz2wsx zaq12wsx qazwsx abc123 abcd1234 a1b2c3 aa123456 iloveyou
letmein welcome monkey dragon master sunshine princess football baseball superman batman
shadow michael jordan trustno1 starwars whatever freedom hello login access secret
admin administrator admin123 admin1234 adminadmin root toor sysadmin system sys manager
changeme change-me change_me changeit changethis default guest user test tester testing
demo temp temppass service support operator supervisor maintenance setup install
radbridge mirth mirthconnect nextgen orthanc dcm4chee conquest pacs dicom hl7 fhir ris
rhapsody cloverleaf corepoint ensemble iris healthshare hospital radiology clinic doctor
nurse medical health siemens philips agfa carestream fujifilm sectra insite vendor
postgres postgresql mysql oracle sa sql database tomcat jboss wildfly weblogic
"""
COMMON_PASSWORDS = frozenset(_COMMON.split())
_EDGES = string.digits + string.punctuation + string.whitespace
_SUFFIXES = ("", "1", "12", "123", "1234", "!", "2024", "2025", "2026")
# Tried against every scrypt password hash (each try costs tens of milliseconds).
_HASH_PROBES = (
    *("admin", "administrator", "password", "changeme", "change-me", "changeit", "secret"),
    *("default", "radbridge", "root", "123456", "12345678", "qwerty", "letmein", "welcome"),
    *("guest", "test", "admin123", "password1", "passw0rd", "Password1", "Password123"),
    *("Admin123", "Welcome1", "P@ssw0rd"),
)


def password_problem(name: str, secret: str) -> str | None:
    """Why *secret* is weak for the user or token *name* (never quoting it), or None."""
    if not secret.strip():
        return "is empty or whitespace"
    if len(secret) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    folded = secret.casefold()
    if folded in COMMON_PASSWORDS or folded.strip(_EDGES) in COMMON_PASSWORDS:
        return "is a common or default password"
    if name and name.casefold() in folded:
        return "contains the user name"
    return None


def guesses(name: str, *, thorough: bool = False) -> list[str]:
    """What to try against a stored hash of *name*'s secret: the empty string, the name's
    obvious variants and the most common defaults. *thorough* (for cheap hashes: a SHA-256
    token, not a scrypt password) tries every common password with common suffixes."""
    suffixes = _SUFFIXES if thorough else _SUFFIXES[:4]
    bases = dict.fromkeys((name, name.lower(), name.capitalize(), name.upper()))
    found = dict.fromkeys(["", *(b + s for b in bases for s in suffixes), *_HASH_PROBES])
    if thorough:
        found.update(dict.fromkeys(p + s for p in sorted(COMMON_PASSWORDS) for s in suffixes))
    return list(found)


def same_secret(given: str | None, expected: str) -> bool:
    """Compare a caller's secret with ours in constant time (``hmac.compare_digest``);
    a missing one never matches."""
    if given is None:
        return False
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )
