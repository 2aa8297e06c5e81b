"""What the tests share: one polling wait (wait.py), one runner for ansible-playbook and the other Ansible tools
(playbook.py), loopback ports (net.py).

`bench` (tests/bench/) is the test harness: the systemd host, the local AWS, the IMDS emulator, the models.
`benchmarks` (benchmarks/) are the measured figures. This package belongs to neither: it is the tests' toolbox.
"""
