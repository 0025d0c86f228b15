"""The manifests in deploy/ checked against the schedulers' own schemas:
Kubernetes objects with kubernetes-validate (the API's OpenAPI schemas,
strict: unknown fields are errors), AWS Batch requests with botocore's
service model for Batch (the shapes the real API validates against). Also
that each manifest's shard count agrees with its number of indexes, and that
the binary is called the way `ebs2azure migrate --help` documents."""

import json
import os
import unittest

import botocore.session
import botocore.validate
import kubernetes_validate
import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "deploy")
K8S_VERSION = "1.30.0"


def load_json(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return json.load(f)


class Kubernetes(unittest.TestCase):
    def setUp(self):
        with open(os.path.join(ROOT, "kubernetes", "ebs2azure-plan.yaml")) as f:
            self.docs = [d for d in yaml.safe_load_all(f) if d]

    def test_every_object_matches_the_api_schema(self):
        self.assertEqual([d["kind"] for d in self.docs], ["ConfigMap", "PersistentVolumeClaim", "Job"])
        for d in self.docs:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)

    def test_a_broken_object_is_refused(self):
        job = next(d for d in self.docs if d["kind"] == "Job")
        job["spec"]["completions"] = "four"
        with self.assertRaises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(job, K8S_VERSION, strict=True)

    def test_the_job_is_indexed_and_its_shard_count_matches(self):
        job = next(d for d in self.docs if d["kind"] == "Job")
        spec = job["spec"]
        self.assertEqual(spec["completionMode"], "Indexed")
        c = spec["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        self.assertEqual(int(env["EBS2AZURE_SHARD_COUNT"]), spec["completions"])
        self.assertEqual(c["args"][:3], ["migrate", "--plan", "/plan/plan.toml"])
        self.assertIn("--state-dir", c["args"])
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        self.assertTrue({"/plan", "/state"} <= mounts)
        plan = next(d for d in self.docs if d["kind"] == "ConfigMap")["data"]["plan.toml"]
        self.assertIn("[[machine]]", plan)


class AwsBatch(unittest.TestCase):
    def setUp(self):
        self.model = botocore.session.get_session().get_service_model("batch")
        self.validator = botocore.validate.ParamValidator()

    def check(self, operation, params):
        shape = self.model.operation_model(operation).input_shape
        report = self.validator.validate(params, shape)
        return report.generate_report() if report.has_errors() else ""

    def test_the_job_definition_and_the_array_job_match_the_api(self):
        jd = load_json("aws-batch", "job-definition.json")
        self.assertEqual(self.check("RegisterJobDefinition", jd), "")
        sub = load_json("aws-batch", "submit-job.json")
        self.assertEqual(self.check("SubmitJob", sub), "")
        env = {e["name"]: e["value"] for e in jd["containerProperties"]["environment"]}
        self.assertEqual(int(env["EBS2AZURE_SHARD_COUNT"]), sub["arrayProperties"]["size"])
        self.assertEqual(sub["jobDefinition"], jd["jobDefinitionName"])
        cmd = jd["containerProperties"]["command"]
        self.assertEqual(cmd[:2], ["migrate", "--plan"])

    def test_a_broken_request_is_refused(self):
        sub = load_json("aws-batch", "submit-job.json")
        sub["arrayProperties"] = {"size": "4"}
        self.assertNotEqual(self.check("SubmitJob", sub), "")


if __name__ == "__main__":
    unittest.main()
