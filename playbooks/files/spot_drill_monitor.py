# Copyright: llmserve.aws contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The spot drill's stopwatch and AWS trigger, run on the control node (boto3, the control node's credentials).

  watch  Checks that the instance is in service in every target group (then writes --ready-file), polls
         DescribeTargetHealth every 50 ms until the target is out of service (draining/unused) everywhere, and
         prints a JSON report with deregistered_at (epoch seconds). Started before the notice; the drill
         subtracts the notice time.
  fis    (AWS) Triggers a real interruption of this one instance through AWS FIS, action
         aws:ec2:send-spot-instance-interruptions with durationBeforeInterruption PT2M, run with --fis-role-arn
         (a role FIS assumes, allowed ec2:SendSpotInstanceInterruptions on the instance). There is no Ansible
         module for FIS, so this is the minimal boto3 call: create an experiment template, start it, print
         notice_at and the ids. The instance is terminated (or stopped) two minutes later.
On the bench the notice is injected into the IMDS emulator by the request generator on the instance.
"""

import argparse
import json
import sys
import time
import uuid

OUT_OF_SERVICE = ("draining", "unused")
IN_SERVICE = ("healthy", "initial")
POLL_S = 0.05


def target_states(elbv2, target_group_arns, instance_id, port):
    states = {}
    for arn in target_group_arns:
        answer = elbv2.describe_target_health(TargetGroupArn=arn, Targets=[{"Id": instance_id, "Port": port}])
        descriptions = answer.get("TargetHealthDescriptions", [])
        states[arn] = descriptions[0]["TargetHealth"]["State"] if descriptions else "unused"
    return states


def watch(session, args):
    elbv2 = session.client("elbv2", region_name=args.region, endpoint_url=args.endpoint_url or None)
    before = target_states(elbv2, args.target_group_arns, args.instance_id, args.port)
    not_serving = {arn: state for arn, state in before.items() if state not in IN_SERVICE}
    if not_serving:
        return {"error": "the instance is not in service before the drill", "target_states": not_serving}, 2
    started_at = time.time()
    if args.ready_file:
        with open(args.ready_file, "w", encoding="utf-8") as ready:
            ready.write(f"{started_at}\n")
    deadline = time.monotonic() + args.timeout
    states = before
    while time.monotonic() < deadline:
        states = target_states(elbv2, args.target_group_arns, args.instance_id, args.port)
        if all(state in OUT_OF_SERVICE for state in states.values()):
            return {"watch_started_at": started_at, "deregistered_at": time.time(), "target_states": states}, 0
        time.sleep(POLL_S)
    return {"watch_started_at": started_at, "deregistered_at": None, "target_states": states}, 1


def trigger_fis(session, args):
    fis = session.client("fis", region_name=args.region, endpoint_url=args.endpoint_url or None)
    account = args.target_group_arns[0].split(":")[4]
    instance_arn = f"arn:{args.partition}:ec2:{args.region}:{account}:instance/{args.instance_id}"
    template = fis.create_experiment_template(
        clientToken=str(uuid.uuid4()),
        description=f"llmserve spot drill for {args.instance_id}",
        roleArn=args.fis_role_arn,
        stopConditions=[{"source": "none"}],
        targets={
            "SpotInstance": {
                "resourceType": "aws:ec2:spot-instance",
                "resourceArns": [instance_arn],
                "selectionMode": "ALL",
            }
        },
        actions={
            "interrupt": {
                "actionId": "aws:ec2:send-spot-instance-interruptions",
                "parameters": {"durationBeforeInterruption": "PT2M"},
                "targets": {"SpotInstances": "SpotInstance"},
            }
        },
        tags={"Name": "llmserve-spot-drill"},
    )["experimentTemplate"]
    notice_at = time.time()
    experiment = fis.start_experiment(clientToken=str(uuid.uuid4()), experimentTemplateId=template["id"])
    return {
        "notice_at": notice_at,
        "fis_experiment_template_id": template["id"],
        "fis_experiment_id": experiment["experiment"]["id"],
    }, 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["watch", "fis"])
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--target-group-arn", action="append", default=[], dest="target_group_arns", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--endpoint-url", default="", help="local AWS (bench)")
    parser.add_argument("--fis-role-arn", default="", help="fis: the role FIS runs the experiment with")
    parser.add_argument("--partition", default="aws")
    parser.add_argument("--timeout", type=float, default=300.0, help="watch: longest wait for the deregistration")
    parser.add_argument("--ready-file", default="", help="watch: written once the target was seen in service")
    args = parser.parse_args(argv)
    if args.command == "fis" and not args.fis_role_arn:
        parser.error("fis needs --fis-role-arn")

    import boto3

    session = boto3.session.Session()
    report, code = watch(session, args) if args.command == "watch" else trigger_fis(session, args)
    print(json.dumps(report))
    return code


if __name__ == "__main__":
    sys.exit(main())
