"""Faults injected into a running simulated backend through a file it watches (GPUPOOL_SIM_FAULTS_FILE)."""

from __future__ import annotations

from agent.devices.simulated import SimulatedBackend


def test_appended_lines_apply_at_the_next_sample(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    faults = tmp_path / "faults"
    monkeypatch.setenv("GPUPOOL_SIM_FAULTS_FILE", str(faults))
    backend = SimulatedBackend(4, node="n1", track_liveness=False)
    uuids = [d.uuid for d in backend.discover()]
    assert all(s.healthy for s in backend.sample())  # no file yet: nothing happens

    faults.write_text("xid 0 79\nxid 1 13  # not critical\n")
    samples = {s.uuid: s for s in backend.sample()}
    assert (samples[uuids[0]].healthy, samples[uuids[0]].last_xid) == (False, 79)
    assert (samples[uuids[1]].healthy, samples[uuids[1]].last_xid) == (True, 13)

    with faults.open("a") as f:
        f.write(f"lost {uuids[2]}\nbogus 3\nxid 9 79\n")  # bad lines are logged and skipped
    samples = {s.uuid: s for s in backend.sample()}
    assert samples[uuids[2]].healthy is False and samples[uuids[3]].healthy is True
    assert [d.uuid for d in backend.discover()] == [uuids[0], uuids[1], uuids[3]]  # lost: not discovered

    with faults.open("a") as f:
        f.write("healthy 0\n")
    assert {s.uuid: s.healthy for s in backend.sample()}[uuids[0]] is True
    assert backend.health()[uuids[2]] is False

    again = SimulatedBackend(4, node="n1", track_liveness=False)  # a restarted agent replays the file
    assert uuids[2] not in [d.uuid for d in again.discover()]
    assert again.health()[uuids[0]] is True  # xid then healthy again


def test_no_file_no_faults(tmp_path) -> None:  # noqa: ANN001
    backend = SimulatedBackend(2, faults_file=str(tmp_path / "absent"))
    assert all(s.healthy for s in backend.sample()) and len(backend.discover()) == 2
