"""TEST STAND-IN for NVIDIA's nvidia-smi. It replays recorded outputs; it knows nothing about real GPUs.

Run through the `nvidia-smi` shell wrapper next to it (the name tools look for on PATH).

Installed only on test hosts (the molecule systemd host), never on a real GPU machine. It answers the argv
forms llmserve.aws uses, from one recorded case under tests/unit/fixtures/nvidia_smi/<case>/:

  nvidia-smi                                   -> banner.txt
  nvidia-smi -L | --list-gpus                  -> list.txt
  nvidia-smi topo -m | topo --matrix           -> topo.txt
  nvidia-smi --query-gpu=F1,F2,... --format=csv[,noheader],nounits
                                               -> the requested columns of query.csv (recorded with a header)
  nvidia-smi -pm 1 | --persistence-mode=1      -> marks persistence mode on for the case (root only, as real)

A case with error.txt (and exit_code) answers every command with that text and exit code, as a broken
driver does. Which case: $LLMSERVE_TEST_NVIDIA_SMI_CASE, else the first line of
$LLMSERVE_TEST_NVIDIA_SMI_CASE_FILE (default /etc/llmserve-test/nvidia-smi-case).
Where the cases are: $LLMSERVE_TEST_NVIDIA_SMI_FIXTURES, else /usr/local/share/llmserve-test/nvidia-smi, else
the fixtures folder of the checkout this script sits in. State (persistence mode, a log of every call, one JSON
line each) goes under $LLMSERVE_TEST_NVIDIA_SMI_STATE (default /run/llmserve-test/nvidia-smi).
Like the real tool it ignores CUDA_VISIBLE_DEVICES. Python 3 standard library only.
"""

import csv
import io
import json
import os
import re
import sys

DEFAULT_CASE_FILE = "/etc/llmserve-test/nvidia-smi-case"
INSTALLED_FIXTURES = "/usr/local/share/llmserve-test/nvidia-smi"
CHECKOUT_FIXTURES = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "unit", "fixtures",
                                 "nvidia_smi")
DEFAULT_STATE = "/run/llmserve-test/nvidia-smi"
PERSISTENCE_MARK = "persistence-enabled"
# nvidia-smi's own exit codes (man nvidia-smi, RETURN VALUE): 2 invalid argument, 4 insufficient permissions.
EXIT_INVALID_ARGUMENT = 2
EXIT_NO_PERMISSION = 4


def fail_setup(message):
    sys.stderr.write("fake nvidia-smi (test stand-in): %s\n" % message)
    sys.exit(EXIT_INVALID_ARGUMENT)


def case_name():
    name = os.environ.get("LLMSERVE_TEST_NVIDIA_SMI_CASE", "").strip()
    if name:
        return name
    path = os.environ.get("LLMSERVE_TEST_NVIDIA_SMI_CASE_FILE", DEFAULT_CASE_FILE)
    try:
        with open(path) as handle:
            name = handle.readline().strip()
    except OSError as error:
        fail_setup("no case chosen: set LLMSERVE_TEST_NVIDIA_SMI_CASE or write one into %s (%s)" % (path, error))
    if not name:
        fail_setup("%s is empty; it must hold a case name" % path)
    return name


def fixtures_root():
    for candidate in (os.environ.get("LLMSERVE_TEST_NVIDIA_SMI_FIXTURES"), INSTALLED_FIXTURES, CHECKOUT_FIXTURES):
        if candidate and os.path.isdir(candidate):
            return candidate
    fail_setup("no fixtures folder: set LLMSERVE_TEST_NVIDIA_SMI_FIXTURES or install %s" % INSTALLED_FIXTURES)


def read(case_dir, name):
    path = os.path.join(case_dir, name)
    if not os.path.isfile(path):
        fail_setup("case %s has no recorded %s" % (os.path.basename(case_dir), name))
    with open(path) as handle:
        return handle.read()


def state_dir(case):
    path = os.path.join(os.environ.get("LLMSERVE_TEST_NVIDIA_SMI_STATE", DEFAULT_STATE), case)
    os.makedirs(path, exist_ok=True)
    return path


def log_call(case, argv):
    with open(os.path.join(state_dir(case), "calls.log"), "a") as handle:
        handle.write(json.dumps({"case": case, "argv": argv}) + "\n")


def strip_unit(header):
    return re.sub(r"\s*\[[^\]]*\]$", "", header.strip())


def query(case, case_dir, fields_arg, format_arg):
    formats = set(part.strip() for part in format_arg.split(","))
    if "csv" not in formats:
        sys.stdout.write('"--format" option must include "csv".\n')
        sys.exit(EXIT_INVALID_ARGUMENT)
    if "nounits" not in formats:
        fail_setup("only --format=csv,...,nounits is recorded")
    rows = list(csv.reader(io.StringIO(read(case_dir, "query.csv")), skipinitialspace=True))
    header = [strip_unit(cell) for cell in rows[0]]
    wanted = [field.strip() for field in fields_arg.split(",")]
    for field in wanted:
        if field not in header:
            sys.stdout.write('Field "%s" is not a valid field to query.\n\n' % field)
            sys.exit(EXIT_INVALID_ARGUMENT)
    persistence_on = os.path.exists(os.path.join(state_dir(case), PERSISTENCE_MARK))
    out = []
    if "noheader" not in formats:
        out.append(", ".join(rows[0][header.index(field)].strip() for field in wanted))
    for row in rows[1:]:
        if not row:
            continue
        values = dict(zip(header, (cell.strip() for cell in row)))
        if persistence_on and values.get("persistence_mode") == "Disabled":
            values["persistence_mode"] = "Enabled"
        out.append(", ".join(values[field] for field in wanted))
    sys.stdout.write("\n".join(out) + "\n")


def enable_persistence(case, case_dir):
    buses = re.findall(r"\b[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-9A-F]\b", read(case_dir, "banner.txt"))
    if os.geteuid() != 0:
        sys.stdout.write("Unable to set persistence mode for GPU %s: Insufficient Permissions\n"
                         "Terminating early due to previous errors.\n" % buses[0])
        sys.exit(EXIT_NO_PERMISSION)
    mark = os.path.join(state_dir(case), PERSISTENCE_MARK)
    already = os.path.exists(mark)
    with open(mark, "w") as handle:
        handle.write("1\n")
    for bus in buses:
        if already:
            sys.stdout.write("Persistence mode is already Enabled for GPU %s.\n" % bus)
        else:
            sys.stdout.write("Enabled persistence mode for GPU %s.\n" % bus)
    sys.stdout.write("All done.\n")


def main(argv):
    case = case_name()
    case_dir = os.path.join(fixtures_root(), case)
    if not os.path.isdir(case_dir):
        fail_setup("unknown case %r (no folder %s)" % (case, case_dir))
    log_call(case, argv)
    if os.path.isfile(os.path.join(case_dir, "error.txt")):
        sys.stdout.write(read(case_dir, "error.txt"))
        sys.exit(int(read(case_dir, "exit_code").strip()))
    if not argv:
        sys.stdout.write(read(case_dir, "banner.txt"))
    elif argv in (["-L"], ["--list-gpus"]):
        sys.stdout.write(read(case_dir, "list.txt"))
    elif argv in (["topo", "-m"], ["topo", "--matrix"]):
        sys.stdout.write(read(case_dir, "topo.txt"))
    elif argv in (["-pm", "1"], ["-pm", "ENABLED"], ["--persistence-mode=1"], ["--persistence-mode=ENABLED"]):
        enable_persistence(case, case_dir)
    else:
        options = dict(arg.split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
        if len(argv) == 2 and set(options) == {"--query-gpu", "--format"}:
            query(case, case_dir, options["--query-gpu"], options["--format"])
        else:
            fail_setup("argv %r is not a recorded form; see the docstring of %s" % (argv, os.path.realpath(__file__)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
