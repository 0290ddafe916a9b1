"""A driver killed between the final writes of one pack's members: one member's outcome is in the store,
the other's is not. Resume runs the pack again from its (final) checkpoint, and the stored member is not
written again: completed trials are never re-run (its ended_at and Ray trial id stay)."""

from __future__ import annotations

import types

from test_interrupted import FakeWriter, checkpoint, result_for, searcher, tiny_study  # noqa: F401 (a fixture)

from mimax.study.callback import StoreCallback


def test_a_resumed_pack_leaves_its_stored_member_alone(tmp_path, sqlite_url, tiny_study):  # noqa: F811
    store, study, space = tiny_study
    s = searcher(store, study, space)
    s.suggest("a")
    s.suggest("b")  # configuration 0's two seeds asked (packs of one here; the pack below is built by hand)
    ck = checkpoint(tmp_path, ["c0000-s0", "c0000-s1"], step=400)
    store.update_trial("u", "c0000-s0", state="completed", checkpoint=ck, checkpoint_step=400, ray_trial_id="old")
    store.update_trial("u", "c0000-s1", state="running", checkpoint=ck, checkpoint_step=400, ray_trial_id="old")
    before = {r["trial_key"]: r for r in store.trials("u")}["c0000-s0"]

    again = searcher(store, study, space, session=1)
    item = next(i for i in again.queue if i["resume_from"] == ck)
    assert [(m["trial_key"], m.get("ended", False)) for m in item["members"]] == [("c0000-s0", True),
                                                                                    ("c0000-s1", False)]
    config = again.suggest("new")
    assert config["resume_from"] == ck

    writer = FakeWriter()
    cb = StoreCallback(writer)
    trial = types.SimpleNamespace(trial_id="new", config=config, last_result={}, placement_group_factory=None)
    cb.on_trial_start(0, [], trial)
    both = {"records": {**result_for("c0000-s0")["records"], **result_for("c0000-s1")["records"]}}
    cb.on_trial_result(0, [], trial, both)
    cb.on_trial_complete(0, [], trial)
    written = {payload[0] if kind == "trial" else payload["trial_key"] for kind, payload in writer.puts}
    assert written == {"c0000-s1"}  # nothing about the stored member
    after = {r["trial_key"]: r for r in store.trials("u")}["c0000-s0"]
    assert (after["ended_at"], after["ray_trial_id"]) == (before["ended_at"], before["ray_trial_id"])
