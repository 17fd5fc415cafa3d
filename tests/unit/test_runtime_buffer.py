"""Disk buffers and state: what was not acknowledged survives a restart; telemetry stays bounded."""

from agent.buffer import DiskQueue
from agent.runtime.logs import read_chunk
from agent.state import StateDir


def test_queue_survives_restart_and_pops_in_order(tmp_path):
    q = DiskQueue(tmp_path / "q.jsonl")
    q.extend([{"seq": i} for i in range(5)])
    q.pop(2)
    q2 = DiskQueue(tmp_path / "q.jsonl")
    assert q2.peek(10) == [{"seq": 2}, {"seq": 3}, {"seq": 4}]


def test_bounded_queue_drops_oldest_and_counts(tmp_path):
    q = DiskQueue(tmp_path / "t.jsonl", max_items=3)
    for i in range(5):
        q.push(i)
    assert q.peek(10) == [2, 3, 4] and q.dropped == 2
    assert DiskQueue(tmp_path / "t.jsonl", max_items=3).peek(10) == [2, 3, 4]


def test_torn_last_line_is_ignored(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"a": 1}\n{"a": 2')
    assert DiskQueue(path).peek(5) == [{"a": 1}]


def test_seq_is_monotonic_across_restarts(tmp_path):
    s = StateDir(tmp_path)
    assert [s.next_seq(), s.next_seq()] == [1, 2]
    assert StateDir(tmp_path).next_seq() == 3


def test_identity_file_is_private(tmp_path):
    s = StateDir(tmp_path / "st")
    s.save_identity({"node_token": "t"})
    assert (tmp_path / "st" / "node.json").stat().st_mode & 0o077 == 0
    assert StateDir(tmp_path / "st").load_identity() == {"node_token": "t"}


def test_log_chunks_never_split_a_character(tmp_path):
    path = tmp_path / "out.log"
    path.write_bytes("ab€cd".encode())  # € is 3 bytes at offsets 2..4
    data, end = read_chunk(path, 0, max_bytes=4)
    assert (data, end) == ("ab", 2)
    data, end = read_chunk(path, end, max_bytes=4)
    assert (data, end) == ("€c", 6)
    assert read_chunk(path, end) == ("d", 7)
    assert read_chunk(path, 7) == ("", 7)
