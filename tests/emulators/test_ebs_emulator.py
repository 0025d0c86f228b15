"""The EBS emulator as the real AWS SDK (boto3) sees it: if botocore parses its
answers, so can aws-sdk-ebs, since both come from the same service model."""
import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

import boto3
import botocore.config
from botocore.exceptions import ClientError

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "scripts" / "ebs-emulator"
BLOCK = 512 * 1024


def error_of(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"], e.response
    raise AssertionError("no error raised")


class EbsEmulatorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        d = Path(cls.tmp.name)
        port_file = d / "port"
        cls.proc = subprocess.Popen([sys.executable, str(EMULATOR), "serve", "--data", str(d / "data"),
                                     "--port-file", str(port_file)], stderr=subprocess.DEVNULL)
        for _ in range(100):
            if port_file.exists():
                break
            time.sleep(0.05)
        cls.endpoint = f"http://127.0.0.1:{port_file.read_text().strip()}"
        # An image of 1 GiB with 300 random blocks (one of them all zero), seeded through the write API.
        rng = random.Random(5)
        cls.image = d / "disk.raw"
        cls.indexes = sorted(rng.sample(range(2048), 300))
        cls.blocks = {}
        with open(cls.image, "wb") as f:
            f.truncate(1 << 30)
            for i in cls.indexes:
                data = rng.randbytes(BLOCK)
                f.seek(i * BLOCK)
                f.write(data)
                cls.blocks[i] = data
        cls.snap = cls.seed(cls.image)
        cls.ebs = cls.client()

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        cls.proc.wait(timeout=10)
        cls.tmp.cleanup()

    @classmethod
    def seed(cls, image, parent=None):
        cmd = [sys.executable, str(EMULATOR), "seed", "--endpoint", cls.endpoint, str(image)]
        if parent:
            cmd += ["--parent", parent]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120)
        return out.stdout.strip()

    @classmethod
    def client(cls, key="AKIDEMULATOR", retries=1):
        return boto3.client("ebs", region_name="us-east-1", endpoint_url=cls.endpoint,
                            aws_access_key_id=key, aws_secret_access_key="secret",
                            config=botocore.config.Config(retries={"max_attempts": retries, "mode": "standard"},
                                                          read_timeout=10, connect_timeout=5))

    def faults(self, **kw):
        req = urllib.request.Request(self.endpoint + "/__admin/faults", data=json.dumps(kw).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def tearDown(self):
        self.faults(throttle_every=0, error_5xx_every=0, quota_every=0, corrupt_checksum_every=0, empty_pages=0,
                    block_token_ttl=7 * 24 * 3600, page_token_ttl=3600)

    def test_listing_pages_in_index_order_with_real_sizes(self):
        seen, pages, token = [], 0, None
        while True:
            kw = {"SnapshotId": self.snap, "MaxResults": 100}
            if token:
                kw["NextToken"] = token
            r = self.ebs.list_snapshot_blocks(**kw)
            pages += 1
            self.assertEqual(r["BlockSize"], BLOCK)
            self.assertEqual(r["VolumeSize"], 1)
            self.assertGreater(r["ExpiryTime"].timestamp(), time.time())
            seen += [b["BlockIndex"] for b in r["Blocks"]]
            token = r.get("NextToken")
            if not token:
                break
        # The all-zero block is never written by the seeder, like a real snapshot of an unwritten block.
        self.assertEqual(seen, sorted(seen))
        self.assertEqual(seen, [i for i in self.indexes if any(self.blocks[i])])
        self.assertEqual(pages, 3)

    def test_empty_pages_carry_a_next_token(self):
        self.faults(empty_pages=2)
        first = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100)
        self.assertEqual(first["Blocks"], [])
        second = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100, NextToken=first["NextToken"])
        self.assertEqual(second["Blocks"], [])
        third = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100, NextToken=second["NextToken"])
        self.assertEqual(third["Blocks"][0]["BlockIndex"], min(i for i in self.indexes if any(self.blocks[i])))

    def test_starting_block_index_is_honoured(self):
        start = self.indexes[150]
        r = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, StartingBlockIndex=start, MaxResults=100)
        self.assertEqual(r["Blocks"][0]["BlockIndex"], start)

    def test_blocks_come_back_with_their_sha256(self):
        r = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100)
        for b in r["Blocks"][:5]:
            g = self.ebs.get_snapshot_block(SnapshotId=self.snap, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
            data = g["BlockData"].read()
            self.assertEqual(data, self.blocks[b["BlockIndex"]])
            self.assertEqual(g["DataLength"], BLOCK)
            self.assertEqual(g["ChecksumAlgorithm"], "SHA256")
            self.assertEqual(base64.b64decode(g["Checksum"]), hashlib.sha256(data).digest())

    def test_unknown_snapshots_and_bad_tokens_are_typed_json_errors(self):
        code, status, _ = error_of(lambda: self.ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0"))
        self.assertEqual((code, status), ("ResourceNotFoundException", 404))
        b = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100)["Blocks"]
        code, status, resp = error_of(lambda: self.ebs.get_snapshot_block(
            SnapshotId=self.snap, BlockIndex=b[0]["BlockIndex"], BlockToken=b[1]["BlockToken"]))
        self.assertEqual((code, status), ("ValidationException", 400))
        self.assertEqual(resp.get("Reason"), "INVALID_BLOCK_TOKEN")

    def test_tokens_expire(self):
        self.faults(block_token_ttl=0.5, page_token_ttl=0.5)
        r = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100)
        time.sleep(0.8)
        b = r["Blocks"][0]
        code, _, resp = error_of(lambda: self.ebs.get_snapshot_block(
            SnapshotId=self.snap, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"]))
        self.assertEqual((code, resp.get("Reason")), ("ValidationException", "INVALID_BLOCK_TOKEN"))
        code, _, resp = error_of(lambda: self.ebs.list_snapshot_blocks(
            SnapshotId=self.snap, MaxResults=100, NextToken=r["NextToken"]))
        self.assertEqual((code, resp.get("Reason")), ("ValidationException", "INVALID_PAGE_TOKEN"))

    def test_throttling_is_http_400_told_apart_by_its_type(self):
        self.faults(throttle_every=1)
        code, status, _ = error_of(lambda: self.ebs.list_snapshot_blocks(SnapshotId=self.snap))
        self.assertEqual((code, status), ("RequestThrottledException", 400))
        self.faults(throttle_every=0, quota_every=1)
        code, status, _ = error_of(lambda: self.ebs.list_snapshot_blocks(SnapshotId=self.snap))
        self.assertEqual((code, status), ("ServiceQuotaExceededException", 402))
        self.faults(quota_every=0, error_5xx_every=1)
        code, status, _ = error_of(lambda: self.ebs.list_snapshot_blocks(SnapshotId=self.snap))
        self.assertEqual((code, status), ("InternalServerException", 500))

    def test_sdk_retries_get_through_a_storm(self):
        self.faults(error_5xx_every=2)
        patient = self.client(retries=5)
        r = patient.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100)
        self.assertEqual(len(r["Blocks"]), 100)

    def test_a_corrupted_checksum_does_not_match_the_data(self):
        self.faults(corrupt_checksum_every=1)
        b = self.ebs.list_snapshot_blocks(SnapshotId=self.snap, MaxResults=100)["Blocks"][0]
        g = self.ebs.get_snapshot_block(SnapshotId=self.snap, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
        self.assertNotEqual(base64.b64decode(g["Checksum"]), hashlib.sha256(g["BlockData"].read()).digest())

    def test_wrong_credentials_are_refused(self):
        code, status, _ = error_of(lambda: self.client(key="AKIDWRONG").list_snapshot_blocks(SnapshotId=self.snap))
        self.assertEqual((code, status), ("UnrecognizedClientException", 403))

    def test_children_inherit_blocks_and_changed_blocks_are_the_difference(self):
        child_image = Path(self.tmp.name) / "child.raw"
        with open(child_image, "wb") as f:
            f.truncate(1 << 30)
            f.seek(5 * BLOCK)
            f.write(b"\x07" * BLOCK)
            f.seek(self.indexes[0] * BLOCK)
            f.write(b"\x09" * BLOCK)
        child = self.seed(child_image, parent=self.snap)
        listed, token = [], None
        while True:  # botocore defines no paginator for EBS
            page = self.ebs.list_snapshot_blocks(SnapshotId=child, **({"NextToken": token} if token else {}))
            listed += [b["BlockIndex"] for b in page["Blocks"]]
            token = page.get("NextToken")
            if not token:
                break
        self.assertEqual(set(listed), {i for i in self.indexes if any(self.blocks[i])} | {5})
        changed = self.ebs.list_changed_blocks(FirstSnapshotId=self.snap, SecondSnapshotId=child)["ChangedBlocks"]
        got = {c["BlockIndex"]: ("FirstBlockToken" in c, "SecondBlockToken" in c) for c in changed}
        want = {5: (5 in self.blocks, True), self.indexes[0]: (True, True)}
        self.assertEqual(got, want)
        b = [c for c in changed if c["BlockIndex"] == self.indexes[0]][0]
        new = self.ebs.get_snapshot_block(SnapshotId=child, BlockIndex=b["BlockIndex"], BlockToken=b["SecondBlockToken"])
        self.assertEqual(new["BlockData"].read(), b"\x09" * BLOCK)
        old = self.ebs.get_snapshot_block(SnapshotId=self.snap, BlockIndex=b["BlockIndex"], BlockToken=b["FirstBlockToken"])
        self.assertEqual(old["BlockData"].read(), self.blocks[self.indexes[0]])

    def ec2(self, key="AKIDEMULATOR"):
        return boto3.client("ec2", region_name="us-east-1", endpoint_url=self.endpoint,
                            aws_access_key_id=key, aws_secret_access_key="secret",
                            config=botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"}))

    def test_ec2_snapshots_freeze_instances_whose_volumes_are_files(self):
        d = Path(self.tmp.name)
        img = d / "live.raw"
        with open(img, "wb") as f:
            f.truncate(1 << 30)
            for i in (1, 2, 3, 4):
                f.seek(i * BLOCK)
                f.write(bytes([i]) * BLOCK)
        req = urllib.request.Request(self.endpoint + "/__admin/instances", method="POST",
                                     data=json.dumps({"volumes": [{"device": "/dev/xvda", "image": str(img)}],
                                                      "name": "web01"}).encode())
        with urllib.request.urlopen(req, timeout=10) as r:
            inst = json.loads(r.read())
        ec2 = self.ec2()
        # botocore parses the XML answers: the wire format matches EC2's service model.
        got = ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0]["Instances"][0]
        self.assertEqual(got["State"]["Name"], "running")
        vol = got["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
        self.assertEqual(vol, inst["Volumes"][0]["VolumeId"])
        self.assertEqual(next(t["Value"] for t in got["Tags"] if t["Key"] == "Name"), "web01")

        def take():
            s = ec2.create_snapshots(InstanceSpecification={"InstanceId": inst["InstanceId"]})["Snapshots"]
            self.assertEqual([x["VolumeId"] for x in s], [vol])
            sid = s[0]["SnapshotId"]
            for _ in range(100):
                state = ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
                if state["State"] == "completed":
                    break
                time.sleep(0.05)
            self.assertEqual(state["State"], "completed")
            self.assertEqual(state["VolumeId"], vol)
            return sid

        first = take()
        with open(img, "r+b") as f:
            f.seek(2 * BLOCK)
            f.write(b"\x09" * BLOCK)  # changed
            f.seek(3 * BLOCK)
            f.write(bytes(BLOCK))  # written with zeros
        subprocess.run(["fallocate", "-p", "-o", str(4 * BLOCK), "-l", str(BLOCK), str(img)], check=True)
        second = take()
        changed = self.ebs.list_changed_blocks(FirstSnapshotId=first, SecondSnapshotId=second)["ChangedBlocks"]
        got = {b["BlockIndex"]: ("FirstBlockToken" in b, "SecondBlockToken" in b) for b in changed}
        self.assertEqual(got, {2: (True, True), 3: (True, True), 4: (True, False)})
        listed = [b["BlockIndex"] for b in self.ebs.list_snapshot_blocks(SnapshotId=second)["Blocks"]]
        self.assertEqual(listed, [1, 2, 3])
        # A snapshot of another volume is unrelated.
        code, status, resp = error_of(lambda: self.ebs.list_changed_blocks(FirstSnapshotId=self.snap,
                                                                         SecondSnapshotId=second))
        self.assertEqual((code, status, resp["Reason"]), ("ValidationException", 400, "UNRELATED_SNAPSHOTS"))
        # Stopping takes a while, as on EC2.
        s = ec2.stop_instances(InstanceIds=[inst["InstanceId"]])["StoppingInstances"][0]
        self.assertEqual(s["CurrentState"]["Name"], "stopping")
        code, status, _ = error_of(lambda: ec2.describe_instances(InstanceIds=["i-0000000000000000f"]))
        self.assertEqual((code, status), ("InvalidInstanceID.NotFound", 400))
        code, status, _ = error_of(lambda: self.ec2("AKIDOTHER").describe_snapshots(SnapshotIds=[first]))
        self.assertEqual((code, status), ("AuthFailure", 401))

    def test_ec2_discovery_calls_parse_with_boto3_filters_and_pages(self):
        d = Path(self.tmp.name)
        imgs = []
        for k in range(3):
            img = d / f"disc{k}.raw"
            with open(img, "wb") as f:
                f.truncate(1 << 30)
            imgs.append(img)

        def register(spec):
            req = urllib.request.Request(self.endpoint + "/__admin/instances", method="POST",
                                         data=json.dumps(spec).encode())
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        win = register({"volumes": [{"device": "/dev/sda1", "image": str(imgs[0])},
                                    {"device": "/dev/xvdb", "image": str(imgs[1]), "encrypted": True,
                                     "size_gib": 40000}],
                        "name": "win01", "platform": "windows", "boot_mode": "uefi", "instance_type": "m5.xlarge",
                        "tags": {"wave": "1"}})
        arm = register({"volumes": [{"device": "/dev/xvda", "image": str(imgs[2])}], "name": "arm01",
                        "architecture": "arm64", "instance_type": "m6g.large", "tags": {"wave": "2"}})
        ec2 = self.ec2()
        got = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:wave", "Values": ["1"]}])["Reservations"]
               for i in r["Instances"]]
        self.assertEqual([i["InstanceId"] for i in got], [win["InstanceId"]])
        i = got[0]
        self.assertEqual((i["Platform"], i["Architecture"], i["BootMode"], i["RootDeviceType"], i["InstanceType"]),
                         ("windows", "x86_64", "uefi", "ebs", "m5.xlarge"))
        a = ec2.describe_instances(InstanceIds=[arm["InstanceId"]])["Reservations"][0]["Instances"][0]
        self.assertEqual(a["Architecture"], "arm64")
        # Pages: boto3's paginator follows NextToken.
        pages = list(ec2.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
        ids = [i["InstanceId"] for p in pages for r in p["Reservations"] for i in r["Instances"]]
        self.assertIn(win["InstanceId"], ids)
        self.assertEqual(len(ids), len(set(ids)))
        code, _, _ = error_of(lambda: ec2.describe_instances(Filters=[{"Name": "colour", "Values": ["x"]}]))
        self.assertEqual(code, "InvalidParameterValue")
        code, _, _ = error_of(lambda: ec2.describe_instances(InstanceIds=[win["InstanceId"]], MaxResults=5))
        self.assertEqual(code, "InvalidParameterCombination")
        vols = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [win["InstanceId"]]}])
        by_dev = {v["Attachments"][0]["Device"]: v for v in vols["Volumes"]}
        self.assertEqual((by_dev["/dev/xvdb"]["Size"], by_dev["/dev/xvdb"]["Encrypted"]), (40000, True))
        self.assertEqual(by_dev["/dev/sda1"]["Size"], 1)
        # Snapshots of one volume, the caller's own, completed.
        vol = win["Volumes"][0]["VolumeId"]
        ec2.create_snapshots(InstanceSpecification={"InstanceId": win["InstanceId"]})
        snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": [vol]}])
        self.assertEqual({s["VolumeId"] for s in snaps["Snapshots"]}, {vol})
        self.assertEqual(ec2.describe_snapshots(OwnerIds=["999988887777"],
                                                Filters=[{"Name": "volume-id", "Values": [vol]}])["Snapshots"], [])

    def test_only_loopback(self):
        out = subprocess.run([sys.executable, str(EMULATOR), "serve", "--host", "0.0.0.0"], capture_output=True, text=True)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("loopback", out.stderr)


if __name__ == "__main__":
    unittest.main()
