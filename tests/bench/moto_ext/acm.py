"""The load balancer's own access to ACM: the certificate and private key behind a listener's certificate ARN.

Real AWS: an HTTPS listener names an ACM certificate ARN and the load balancer terminates TLS with that
certificate's private key, which it obtains from ACM internally; no public API hands out the key of an imported
or ACM-issued public certificate (ExportCertificate is for private-CA and exportable certificates only, as moto
also enforces). The bench's ALB stand-in (tests/bench/alb_standin.py) plays that load balancer, so it reads
the key through this internal path (GET /_llmserve/acm/load-balancer-certificate?arn=ARN), never through a
public ACM call. Nothing else should use it.
"""

import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from moto.acm.models import acm_backends

_CERTIFICATE_ARN = re.compile(r"arn:aws:acm:(?P<region>[a-z]{2}(-[a-z]+)+-\d):(?P<account>\d{12}):certificate/[0-9a-f-]{36}")


def load_balancer_certificate(arn: str) -> dict[str, str]:
    """{"certificate", "chain", "private_key"} (PEM text; the key unencrypted PKCS#8) of the ACM certificate `arn`.

    ValueError when arn is not an ACM certificate ARN; moto's ResourceNotFound when no such certificate exists."""
    match = _CERTIFICATE_ARN.fullmatch(arn)
    if match is None:
        raise ValueError(f"not an ACM certificate ARN: {arn!r}")
    bundle: Any = acm_backends[match["account"]][match["region"]].get_certificate(arn)
    key = bundle._key.private_bytes(  # moto keeps the key only as this object
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    return {"certificate": bundle.cert.decode(), "chain": bundle.chain.decode(), "private_key": key.decode()}
