"""A self-signed TLS certificate for the bench's load balancer: the certificate is its own CA file.

    python tests/bench/self_signed_cert.py --dns-name NAME [--dns-name ...] --out-dir DIR
writes DIR/cert.pem and DIR/key.pem (0600) and prints the certificate's path; a second run with the same names
reuses them. Clients verify the load balancer with `cafile=DIR/cert.pem` and the DNS name as SNI/Host; the bench
imports both files into the local ACM, whose certificate ARN the listener names.
"""

import argparse
import datetime
import os
import re
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")
VALID_DAYS = 30


def make(dns_names: list[str], out_dir: Path) -> tuple[Path, Path]:
    """(certificate, key) files for dns_names in out_dir, made once and reused while they name the same hosts."""
    for name in dns_names:
        if not _DNS_NAME.fullmatch(name):
            raise ValueError(f"--dns-name {name!r} is not a DNS name")
    cert_file, key_file = out_dir / "cert.pem", out_dir / "key.pem"
    if cert_file.exists() and key_file.exists():
        existing = x509.load_pem_x509_certificate(cert_file.read_bytes())
        names = existing.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if names.get_values_for_type(x509.DNSName) == dns_names:
            return cert_file, key_file
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_file, key_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dns-name", action="append", required=True, help="a name the certificate is for")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        cert_file, _key = make(args.dns_name, args.out_dir)
    except ValueError as error:
        print(f"self_signed_cert: {error}", file=sys.stderr)
        return 2
    print(cert_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
