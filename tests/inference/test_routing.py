"""Routing rules: first matching rule wins, criteria, own outputs never read, bad rules named."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.packages import read_manifest
from inference.routing import RoutingError, SeriesFacts, load_routing, route
from vlnode.settings import REPO_CONF_DIR

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DX_IMAGE = "1.2.840.10008.5.1.4.1.1.1.1"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


def facts(uid: str, modality: str, count: int, **kw: str) -> SeriesFacts:
    return SeriesFacts(
        series_instance_uid=uid,
        modality=modality,
        body_part_examined=kw.get("body_part", ""),
        sop_class_uid=kw.get("sop_class", CT_IMAGE),
        series_description=kw.get("description", ""),
        calling_ae_titles=(kw.get("ae", "PACS"),),
        instances=count,
    )


def rules(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pkg").mkdir(exist_ok=True)
    path = tmp_path / "routing.toml"
    path.write_text(text)
    return path


def test_the_shipped_rules_load_and_route_ct_and_x_ray() -> None:
    table = load_routing(REPO_CONF_DIR / "routing.toml")
    ct = route(table, [facts("1.1", "CT", 1), facts("1.2", "CT", 120), facts("1.3", "CT", 40)])
    assert ct.rule is not None and ct.rule.name == "ct"
    assert [s.series_instance_uid for s in ct.series] == ["1.2"]  # the largest stack
    tasks = [read_manifest(table.package_location(p)).task for p in ct.rule.packages]  # type: ignore[arg-type]
    assert tasks == ["findings", "impression", "segmentation"]
    mr = route(table, [facts("3.1", "MR", 30)])
    assert mr.rule is not None and mr.rule.name == "mr"  # no CT segmentation for MR
    xray = route(table, [facts("2.1", "DX", 1, sop_class=DX_IMAGE)])
    assert xray.rule is not None and xray.rule.name == "chest-x-ray"
    location = table.package_location(xray.rule.packages[0])
    assert isinstance(location, Path) and (location / "package.json").is_file()


def test_no_rule_gives_a_reason_naming_what_was_seen(tmp_path: Path) -> None:
    table = load_routing(rules(tmp_path, '[[rule]]\nmodality = "CT"\npackages = ["pkg"]\n'))
    decision = route(table, [facts("1", "MG", 4, body_part="BREAST")])
    assert decision.rule is None
    assert "MG/BREAST" in decision.reason and "add a rule" in decision.reason


def test_own_outputs_are_never_read(tmp_path: Path) -> None:
    table = load_routing(rules(tmp_path, '[[rule]]\npackages = ["pkg"]\n'))  # matches anything
    forwarded = [
        facts("9.1", "SR", 1, sop_class=COMPREHENSIVE_3D_SR),
        facts("9.2", "SEG", 1, sop_class=SEGMENTATION),
    ]
    decision = route(table, forwarded)
    assert decision.rule is None and "no image series" in decision.reason


def test_criteria_body_part_description_and_calling_ae(tmp_path: Path) -> None:
    text = (
        '[[rule]]\nname = "chest-ct"\nmodality = ["CT"]\nbody_part = ["chest"]\n'
        'series_description = "lung|thorax"\ncalling_ae = ["PACS"]\nseries = "all"\n'
        'packages = ["pkg"]\n'
        '[[rule]]\nname = "other"\npackages = ["pkg"]\n'
    )
    table = load_routing(rules(tmp_path, text))
    chest = [
        facts("1", "CT", 80, body_part="CHEST", description="Thorax 1mm"),
        facts("2", "CT", 90, body_part="CHEST", description="Lung window"),
        facts("3", "CT", 99, body_part="CHEST", description="Scout"),
    ]
    decision = route(table, chest)
    assert decision.rule is not None and decision.rule.name == "chest-ct"
    assert {s.series_instance_uid for s in decision.series} == {"1", "2"}
    other_sender = [facts("1", "CT", 80, body_part="CHEST", description="Thorax", ae="MOD1")]
    assert route(table, other_sender).rule.name == "other"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[[rule]]\nname = "a"\nmodality = "CT"\n', "packages must name"),
        ('[[rule]]\nname = "a"\npackages = ["missing"]\n', "does not exist"),
        ('[[rule]]\nname = "a"\npackages = ["pkg"]\nseries = "biggest"\n', "'largest' or 'all'"),
        ('[[rule]]\nname = "a"\npackages = ["pkg"]\nseries_description = "("\n', "("),
        ('[[rule]]\nname = "a"\npackages = ["pkg"]\nmodalty = "CT"\n', "unknown key(s) modalty"),
        ('[[rule]]\nname = "a"\npackages = ["pkg"]\nmin_instances = 0\n', "min_instances"),
        ("[[rule]\n", "cannot read routing file"),
    ],
)
def test_bad_rules_are_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(RoutingError) as info:
        load_routing(rules(tmp_path, text))
    assert named in str(info.value)
