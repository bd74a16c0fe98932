"""Checks of charts/weir that run without helm or a Kubernetes API server:

* every file of the chart that is not a template parses (YAML, JSON);
* values.yaml validates against values.schema.json, and the schema refuses bad values;
* every `.Values.x.y` a template reads exists in values.yaml (a typo renders as empty);
* the CRDs under crds/ are CustomResourceDefinitions of weir.dev (their content is kept equal to
  the generated YAML by the Rust test crds/tests/crd_yaml_in_sync.rs);
* where the helm binary exists, `helm lint` and `helm template` pass (skipped otherwise).
"""

import copy
import json
import pathlib
import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml

CHART = pathlib.Path(__file__).resolve().parents[2] / "charts" / "weir"
# Files that are neither templates nor YAML/JSON, allowed as they are.
PLAIN_FILES = {"README.md", ".helmignore"}


def chart_files():
    return sorted(p for p in CHART.rglob("*") if p.is_file())


def non_template_files():
    return [p for p in chart_files() if "templates" not in p.relative_to(CHART).parts]


def load_values():
    return yaml.safe_load((CHART / "values.yaml").read_text())


def load_schema():
    return json.loads((CHART / "values.schema.json").read_text())


def test_chart_has_its_files():
    names = {str(p.relative_to(CHART)) for p in chart_files()}
    for required in ["Chart.yaml", "values.yaml", "values.schema.json", "README.md", "templates/NOTES.txt",
                     "templates/broker-statefulset.yaml", "templates/operator-deployment.yaml"]:
        assert required in names, f"{required} missing from {CHART}"


@pytest.mark.parametrize("path", non_template_files(), ids=lambda p: str(p.relative_to(CHART)))
def test_every_non_template_file_parses(path):
    name = path.name
    if name in PLAIN_FILES:
        assert path.read_text(encoding="utf-8").strip(), f"{path} is empty"
    elif name.endswith((".yaml", ".yml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} holds no YAML document"
    elif name.endswith(".json"):
        json.loads(path.read_text())
    else:
        pytest.fail(f"{path}: unexpected file type in the chart (add it to PLAIN_FILES if intended)")


def test_chart_yaml():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "weir"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"]), chart["version"]


def test_values_validate_against_the_schema():
    schema = load_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(load_values(), schema, cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize(
    "path, bad",
    [
        (["broker", "replicas"], "three"),
        (["broker", "replicas"], 0),
        (["broker", "antiAffinity"], "sometimes"),
        (["broker", "storage", "size"], "ten gigs"),
        (["broker", "ports", "kafka"], 70000),
        (["operator", "logFormat"], "xml"),
        (["broker", "preStopSleepSeconds"], -1),
        (["broker", "replicaz"], 3),
    ],
)
def test_schema_refuses_bad_values(path, bad):
    values = copy.deepcopy(load_values())
    node = values
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = bad
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, load_schema(), cls=jsonschema.Draft7Validator)


def test_every_value_a_template_reads_exists():
    values = load_values()
    missing = []
    for tpl in sorted((CHART / "templates").iterdir()):
        for ref in sorted(set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", tpl.read_text()))):
            node = values
            for key in ref.strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    missing.append(f"{tpl.name}: .Values{ref}")
                    break
                node = node[key]
    assert not missing, "templates read values that values.yaml does not define: " + ", ".join(missing)


def test_every_value_is_documented_in_the_readme():
    readme = (CHART / "README.md").read_text()

    def leaves(node, prefix=""):
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                yield from leaves(v, key + ".")
            else:
                yield key

    undocumented = [k for k in leaves(load_values()) if f"`{k}`" not in readme]
    assert not undocumented, "values missing from charts/weir/README.md: " + ", ".join(undocumented)


def test_templates_balance_their_actions():
    for tpl in sorted((CHART / "templates").iterdir()):
        text = tpl.read_text()
        assert text.count("{{") == text.count("}}"), f"{tpl.name}: unbalanced {{{{ }}}}"
        opens = len(re.findall(r"{{-?\s*(?:if|range|with|define)\b", text))
        ends = len(re.findall(r"{{-?\s*end\b", text))
        assert opens == ends, f"{tpl.name}: {opens} if/range/with/define but {ends} end"


def test_crds_are_weir_dev_definitions():
    crds = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in crds] == [
        "bindings.weir.dev.yaml", "exchanges.weir.dev.yaml", "queues.weir.dev.yaml", "topics.weir.dev.yaml"]
    for path in crds:
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"] == "CustomResourceDefinition"
        assert doc["spec"]["group"] == "weir.dev"
        assert doc["metadata"]["name"] == path.name.removesuffix(".yaml")


@pytest.mark.skipif(shutil.which("helm") is None, reason="helm is not installed on this machine")
def test_helm_lint_and_template():
    subprocess.run(["helm", "lint", "--strict", str(CHART)], check=True)
    out = subprocess.run(["helm", "template", "weir", str(CHART), "--namespace", "weir"],
                         check=True, capture_output=True, text=True).stdout
    kinds = {d["kind"] for d in yaml.safe_load_all(out) if d}
    assert {"StatefulSet", "Deployment", "Service", "PodDisruptionBudget", "Role"} <= kinds
