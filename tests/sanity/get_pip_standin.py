"""Stand-in for the get-pip.py that ansible-test downloads from Ansible's CI file host.

That host is unreachable from the machines this project is tested on, so `make sanity` caches this file where
ansible-test looks for its bootstrap script. Like get-pip.py, it makes pip importable from a pip wheel (fetched
once from PyPI by `make sanity`) and then runs `pip install` with the arguments ansible-test gives.
"""

import glob
import os
import sys

# get-pip.py understands these two flags itself; pip does not.
OWN_FLAGS = {"--no-setuptools", "--no-wheel"}


def main():
    # ansible-test scrubs the environment, so the wheel lies beside this file, where `make sanity` puts it.
    wheel_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-wheels")
    wheels = sorted(glob.glob(os.path.join(wheel_dir, "pip-*.whl")))
    if not wheels:
        sys.exit("get-pip stand-in: no pip wheel in %s; run `make sanity` to fetch it" % wheel_dir)
    sys.path.insert(0, wheels[-1])
    from pip._internal.cli.main import main as pip_main  # pylint: disable=import-outside-toplevel

    args = [arg for arg in sys.argv[1:] if arg not in OWN_FLAGS]
    sys.exit(pip_main(["install", "--find-links", wheel_dir] + args))


if __name__ == "__main__":
    main()
