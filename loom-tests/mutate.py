#!/usr/bin/env python3
"""Ordering mutation check for the loom models.

For each labelled ordering (see src/slot.rs, src/ring/write.rs and
src/ring/arena.rs), weaken it
to Relaxed (or delete the fence), run the loom models on a scratch copy of the
crate, and report whether some model failed. A mutant that survives is either a
gap in the models or an ordering loom cannot distinguish; the README says which.

    python3 loom-tests/mutate.py            # all mutants
    python3 loom-tests/mutate.py W3 R2      # some

Not part of CI (each mutant rebuilds the crate under loom). Runs on a copy, so
the working tree is never modified.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# label: (file, exact text, replacement, what it means)
MUTANTS = {
    "W1": ("src/ring/write.rs",
           "slot.wait_for(committed(old), Ordering::Acquire)",
           "slot.wait_for(committed(old), Ordering::Relaxed)",
           "previous-lap wait Acquire -> Relaxed"),
    "W3": ("src/slot.rs",
           "    fence(Ordering::Release);\n}",
           "}",
           "writer's Release fence removed"),
    "W5": ("src/slot.rs",
           "self.stamp.store(committed(t), Ordering::Release);",
           "self.stamp.store(committed(t), Ordering::Relaxed);",
           "commit store Release -> Relaxed"),
    "R1": ("src/slot.rs",
           "let s1 = self.stamp.load(Ordering::Acquire);",
           "let s1 = self.stamp.load(Ordering::Relaxed);",
           "reader's first stamp load Acquire -> Relaxed"),
    "R2": ("src/slot.rs",
           "        fence(Ordering::Acquire);\n        // Relaxed: the R2",
           "        // Relaxed: the R2",
           "reader's Acquire fence removed"),
    "R1a": ("src/slot.rs",
            "let first = self.stamp.load(Ordering::Acquire);",
            "let first = self.stamp.load(Ordering::Relaxed);",
            "read_at's first stamp load Acquire -> Relaxed"),
    "R2a": ("src/slot.rs",
            "        fence(Ordering::Acquire);\n        // Relaxed: ordered after the payload loads by the R2",
            "        // Relaxed: ordered after the payload loads by the R2",
            "read_at's Acquire fence removed"),
    "D1": ("src/ring/write.rs",
           "slot.wait_for(committed(ticket), Ordering::Acquire);",
           "slot.wait_for(committed(ticket), Ordering::Relaxed);",
           "drain wait Acquire -> Relaxed"),
    "F1": ("src/ring/arena.rs",
           ".compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed)",
           ".compare_exchange_weak(head, new, Ordering::Relaxed, Ordering::Relaxed)",
           "free-list push Release -> Relaxed"),
    "F2": ("src/ring/arena.rs",
           "let mut head = c.free.load(Ordering::Acquire);",
           "let mut head = c.free.load(Ordering::Relaxed);",
           "free-list pop: first head load Acquire -> Relaxed"),
    "F2r": ("src/ring/arena.rs",
            ".compare_exchange_weak(head, new, Ordering::Relaxed, Ordering::Acquire)",
            ".compare_exchange_weak(head, new, Ordering::Relaxed, Ordering::Relaxed)",
            "free-list pop: failed CAS's reload Acquire -> Relaxed"),
    # Protocol steps rather than orderings (DESIGN.md lists these too).
    "P1": ("src/ring/write.rs",
           "if slot.wait_for(committed(old), Ordering::Acquire) {",
           "if false {",
           "previous-lap wait skipped"),
    "P3": ("src/ring/write.rs",
           "        let panic = match ticket.checked_sub(self.layout.capacity) {",
           "        slot.claim(ticket);\n"
           "        let panic = match ticket.checked_sub(self.layout.capacity) {",
           "slot claimed before the capture"),
    # Several edits: the claim moves from before the swap to after it.
    "P6": ("src/ring/write.rs",
           [("        slot.claim(ticket);\n        if bytes.len() <= self.layout.inline_bytes",
             "        if bytes.len() <= self.layout.inline_bytes"),
            ("            writer_fence();\n            slot.fill(",
             "            slot.claim(ticket);\n            writer_fence();\n            slot.fill("),
            ("            self.store_spilled(slot, old, bytes);",
             "            self.store_spilled(slot, old, bytes, ticket);"),
            ("    fn store_spilled(&self, slot: Slot<'_>, old: Header, bytes: &[u8]) {",
             "    fn store_spilled(&self, slot: Slot<'_>, old: Header, bytes: &[u8], ticket: u64) {"),
            ("            .swap(old.block, self.layout.tail(old.len as usize), tail.len());\n",
             "            .swap(old.block, self.layout.tail(old.len as usize), tail.len());\n"
             "        slot.claim(ticket);\n")],
           None,
           "claim moved after the block swap (a freed block published before the claim)"),
    "P7": ("src/ring/arena.rs",
           "            (Some((c, b)), Some(n)) if c == n => Some(b),",
           "            (Some((_, b)), Some(_)) => Some(b),",
           "slot keeps its block whatever the new entry's size class"),
    # The door behind the call layer's audit gate (src/door.rs).
    "G2": ("src/door.rs",
           "self.0.state.fetch_sub(1, Ordering::Release);",
           "self.0.state.fetch_sub(1, Ordering::Relaxed);",
           "door leave Release -> Relaxed"),
    "E2": ("src/door.rs",
           "self.state.load(Ordering::Acquire) & !SHUT",
           "self.state.load(Ordering::Relaxed) & !SHUT",
           "count of threads inside Acquire -> Relaxed"),
    "P5": ("src/door.rs",
           "while self.inside() != 0 {",
           "while false && self.inside() != 0 {",
           "end does not wait for writers inside the gate"),
}


def run(label, scratch):
    path, old, new, what = MUTANTS[label]
    # One edit, or a list of (old, new) edits applied in turn.
    edits = old if isinstance(old, list) else [(old, new)]
    src = os.path.join(ROOT, path)
    text = open(src).read()
    mutated = text
    for old, new in edits:
        if mutated.count(old) != 1:
            return f"{label}: pattern not found exactly once in {path} (update mutate.py)"
        mutated = mutated.replace(old, new)
    dst = os.path.join(scratch, path)
    open(dst, "w").write(mutated)
    env = dict(os.environ, RUSTFLAGS="--cfg loom", LOOM_MAX_PREEMPTIONS=os.environ.get(
        "LOOM_MAX_PREEMPTIONS", "2"), CARGO_TARGET_DIR=os.path.join(ROOT, "target", "mutants"))
    start = time.time()
    cmd = ["cargo", "test", "--release", "--lib", "--test", "loom_ring", "--test", "loom_sink",
           "--test", "loom_spill", "--test", "loom_gate", "--no-fail-fast"]
    proc = subprocess.run(cmd, cwd=scratch, env=env, capture_output=True, text=True)
    open(dst, "w").write(text)  # restore for the next mutant
    failed = [line.split()[1] for line in proc.stdout.splitlines()
              if line.startswith("test ") and line.rstrip().endswith("FAILED")]
    secs = time.time() - start
    if proc.returncode == 0:
        return f"{label}: SURVIVED ({what}) [{secs:.0f}s]"
    if not failed:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return f"{label}: build or run error ({what}): {' | '.join(tail)}"
    return f"{label}: caught ({what}) by {', '.join(failed)} [{secs:.0f}s]"


def main():
    labels = sys.argv[1:] or list(MUTANTS)
    with tempfile.TemporaryDirectory() as scratch:
        for entry in os.listdir(ROOT):
            if entry in ("target", ".git"):
                continue
            src = os.path.join(ROOT, entry)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(scratch, entry))
            else:
                shutil.copy(src, scratch)
        for label in labels:
            print(run(label, scratch), flush=True)


if __name__ == "__main__":
    main()
