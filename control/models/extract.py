#!/usr/bin/env python3
"""Writes the input shapes of the AWS JSON operations skiff answers, taken
from botocore's service models (`pip install botocore`), to SERVICE.json
here. The control plane checks every request's members against them
(api/protocol/shapes.rs): a member of the wrong type is a
SerializationException, as on AWS.
It also writes every operation of the services docs/API.md tabulates
(operations.json), which api/catalog.rs gives a status each.

    python3 control/models/extract.py   # after upgrading botocore

Only what the checks need is kept: each shape's type and constraints
(min, max, pattern, enum), a structure's members and required ones, a
list's member, a map's value.
"""
import gzip, json, os, re, sys
import botocore

# Every operation's input shape is kept: the dispatchers refuse the ones
# skiff does not serve (api/catalog.rs) before any check runs.
OPERATIONS = {
    "ecs": ("2014-11-13", "all"),
    "ecr": ("2015-09-21", "all"),
    "logs": ("2014-03-28", "all"),
    "cloudwatch": ("2010-08-01", "all"),
    "servicediscovery": ("2017-03-14", "all"),
}

def load(service, version):
    path = os.path.join(os.path.dirname(botocore.__file__), "data", service, version, "service-2.json")
    if os.path.exists(path + ".gz"):
        with gzip.open(path + ".gz") as f:
            return json.load(f)
    with open(path) as f:
        return json.load(f)

def main():
    here = os.path.dirname(os.path.abspath(__file__))
    for service, (version, ops) in OPERATIONS.items():
        model = load(service, version)
        shapes, out_ops = {}, {}
        def keep(name):
            if name in shapes:
                return
            s = model["shapes"][name]
            t = s["type"]
            kept = {"type": t}
            shapes[name] = kept
            for c in ("min", "max", "pattern", "enum"):
                if c in s:
                    kept[c] = s[c]
            if t == "structure":
                kept["members"] = {m: v["shape"] for m, v in s.get("members", {}).items()}
                if s.get("required"):
                    kept["required"] = s["required"]
                for v in kept["members"].values():
                    keep(v)
            elif t == "list":
                kept["member"] = s["member"]["shape"]
                keep(kept["member"])
            elif t == "map":
                kept["value"] = s["value"]["shape"]
                keep(kept["value"])
        for op in sorted(model["operations"]) if ops == "all" else ops:
            shape = model["operations"][op].get("input", {}).get("shape")
            out_ops[op] = shape
            if shape:
                keep(shape)
        doc = {
            "source": f"botocore {botocore.__version__} data/{service}/{version}/service-2.json",
            "operations": out_ops,
            "shapes": dict(sorted(shapes.items())),
        }
        with open(os.path.join(here, f"{service}.json"), "w") as f:
            json.dump(doc, f, indent=0, sort_keys=False, separators=(",", ":"))
            f.write("\n")
        print(service, len(out_ops), "operations,", len(shapes), "shapes")
    catalog(here)

# Every operation of the services whose table docs/API.md keeps (EC2:
# its networking calls an ECS user meets, by this pattern).
CATALOG = {
    "ecs": "2014-11-13", "ecr": "2015-09-21", "elbv2": "2015-12-01",
    "servicediscovery": "2017-03-14", "ec2": "2016-11-15",
    "logs": "2014-03-28", "cloudwatch": "2010-08-01",
}
EC2_NETWORKING = re.compile(
    r"^(Describe|Create|Delete|Modify|Authorize|Revoke|Assign|Unassign|Attach|Detach"
    r"|Associate|Disassociate|Allocate|Release|Update)(Vpcs?|Subnets?|SecurityGroups?"
    r"|SecurityGroupRules|SecurityGroupIngress|SecurityGroupEgress|NetworkInterfaces?|NetworkInterfaceAttribute"
    r"|NetworkInterfacePermissions?|Addresses|Address|AvailabilityZones|Regions"
    r"|AccountAttributes|Tags|RouteTables?|InternetGateways?|VpcAttribute"
    r"|SubnetCidrBlock|VpcCidrBlock|PrivateIpAddresses|Ipv6Addresses"
    r"|SecurityGroupRuleDescriptionsIngress|SecurityGroupRuleDescriptionsEgress"
    r"|DefaultVpc|DefaultSubnet)$")

def catalog(here):
    out = {}
    for service, version in CATALOG.items():
        model = load(service, version)
        ops = sorted(model["operations"])
        if service == "ec2":
            ops = [o for o in ops if EC2_NETWORKING.match(o)]
        out[service] = {
            "source": f"botocore {botocore.__version__} data/{service}/{version}/service-2.json",
            "operations": ops,
        }
    with open(os.path.join(here, "operations.json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("operations.json:", {k: len(v["operations"]) for k, v in out.items()})

if __name__ == "__main__":
    sys.exit(main())
