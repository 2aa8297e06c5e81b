#!/usr/bin/env bash
# Puts the instance metadata address 169.254.169.254/32 on this machine's loopback, so that the bench's IMDS
# emulator can listen where real IMDS answers and a test can prove that the vLLM unit cannot reach it
# (IPAddressDeny). The bench hosts share this machine's network, so they see the address too. Idempotent: does
# nothing when the address is already there. Refuses on an EC2 instance, where the address belongs to the real
# service (taking it over would cut this machine off its own instance role): it says so and leaves the address
# alone, and the vllm_service scenario's IMDS test then fails naming this script. Needs root (`ip addr add`).
set -euo pipefail
address=169.254.169.254
if ip -o -4 addr show dev lo | grep -q " $address/32 "; then
  echo "$address/32 already on lo"
  exit 0
fi
# Real IMDS answers a token request at once; on the bench nothing routes there.
if curl -s -o /dev/null -m 1 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 1' "http://$address/latest/api/token"; then
  echo "bench: not adding $address to lo: it answers (an EC2 instance); the IMDS firewall test needs a bench machine" >&2
  exit 0
fi
ip addr add "$address/32" dev lo
echo "$address/32 added to lo"
