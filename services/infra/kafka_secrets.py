"""The dev broker's TLS material and SCRAM passwords under var/secrets/kafka/, made once by `make up` (0600):
a CA, the broker's certificate (also its client certificate on the mTLS controller listener), and one password
per principal of services.infra.acls. `python -m services.infra.kafka_secrets ensure|scram-args|password NAME`."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.settings import Settings, get_settings

ADMIN: Final = "admin"
# the broker's principal on the controller listener (mTLS): a super user, as KRaft needs for broker-to-controller
BROKER_CN: Final = "switchyard-broker"
CA_FILE: Final = "ca.pem"
BROKER_FILE: Final = "broker.pem"  # Kafka's PEM keystore: the certificate chain, then the PKCS#8 key
VALID_DAYS: Final = 3650


def secrets_dir(settings: Settings) -> Path:
    return settings.var_dir / "secrets" / "kafka"


def password_file(settings: Settings, username: str) -> Path:
    return secrets_dir(settings) / f"{username}.password"


def _write_private(path: Path, data: bytes) -> None:
    """Created 0600 from the start: the secret is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_certificates(directory: Path, hosts: Iterable[str]) -> None:
    """A CA (its key kept beside it, 0600) and a broker certificate it signs, valid for `hosts`."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Switchyard dev Kafka CA")
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    usage = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    broker = (
        x509.CertificateBuilder().subject_name(_name(BROKER_CN)).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    _write_private(directory / "ca.key", _pem_key(ca_key))
    chain = broker.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    _write_private(directory / BROKER_FILE, chain + _pem_key(key))
    _write_private(directory / CA_FILE, ca.public_bytes(serialization.Encoding.PEM))


def ensure(settings: Settings, usernames: Iterable[str]) -> list[str]:
    """Makes what is missing (certificates once, a password per user); returns what it made."""
    directory = secrets_dir(settings)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    made: list[str] = []
    if not (directory / BROKER_FILE).is_file():
        make_certificates(directory, ["127.0.0.1", "localhost", settings.host])
        made += [CA_FILE, BROKER_FILE]
    for username in usernames:
        path = password_file(settings, username)
        if not path.is_file():
            _write_private(path, secrets.token_urlsafe(24).encode())
            made.append(path.name)
    return made


def scram_arguments(settings: Settings, usernames: Iterable[str], mechanism: str = "SCRAM-SHA-512") -> list[str]:
    """`kafka-storage format --add-scram` values, one per user (passwords are URL-safe: no quoting needed)."""
    arguments = []
    for username in usernames:
        password = password_file(settings, username).read_text(encoding="utf-8").strip()
        arguments.append(f"{mechanism}=[name={username},password={password}]")
    return arguments


def main(argv: list[str] | None = None) -> int:
    from services.infra.acls import all_usernames

    parser = argparse.ArgumentParser(prog="python -m services.infra.kafka_secrets", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure", help="make the CA, the broker certificate and the passwords that are missing")
    commands.add_parser("scram-args", help="print one --add-scram value a line, for kafka-storage format")
    password = commands.add_parser("password", help="print one principal's password")
    password.add_argument("username")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.command == "ensure":
        made = ensure(settings, all_usernames())
        if made:
            print(f"made {', '.join(made)} in {secrets_dir(settings)}", file=sys.stderr)
    elif args.command == "scram-args":
        print("\n".join(scram_arguments(settings, all_usernames())))
    else:
        print(password_file(settings, args.username).read_text(encoding="utf-8").strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
