"""The §3 semantics across attempts: random call sequences with finishes and resumes.

`RetryMachine` runs every rule of the single-attempt `ButlerMachine` and adds
one more: end the quantum (success, failure, or a bare close that leaves it
interrupted) and resume it with `QuantumBackedButler.resume`, plainly, with
``skip_existing`` or with ``clobber``. The reference model gains exactly what
resuming means; the three doors (``extract_provenance_data()``, a fresh
`Ledger.replay` and the SQL view) must still agree with it, over all attempts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, rule
from test_semantics import ButlerMachine, Model, _sets

from ledger import DatasetRef, Ledger, QuantumBackedButler
from ledger.recording import success_caveats


@dataclass
class RetryModel(Model):
    """`Model` plus resuming: earlier outputs carry over, skipped or clobbered on request."""

    #: outputs a ``skip_existing`` resume counts as done (until put once or unstored).
    skip: set[uuid.UUID] = field(default_factory=set)

    def put(self, ref: DatasetRef) -> str:
        if ref.id in self.predicted_outputs and ref.id in self.skip:
            self.skip.discard(ref.id)
            self.actual_outputs.add(ref.id)
            return "ok"
        return super().put(ref)

    def prune(
        self, refs: list[DatasetRef], disassociate: bool, unstore: bool, purge: bool
    ) -> type[Exception] | None:
        result = super().prune(refs, disassociate, unstore, purge)
        if result is None and unstore:
            self.skip -= {ref.id for ref in refs}
        return result

    def resume(self, mode: str) -> None:
        self.skip = set()
        if mode == "skip":
            self.skip = set(self.records)  # written, recorded, and the files are intact
        elif mode == "clobber":
            for dataset_id in set(self.actual_outputs):  # pruned: unstore + purge
                self.present.discard(dataset_id)
                self.records.discard(dataset_id)
                self.actual_outputs.discard(dataset_id)


ENDINGS = st.sampled_from(["succeeded", "failed", "interrupted"])
MODES = st.sampled_from(["plain", "skip", "clobber"])


class RetryMachine(ButlerMachine):
    """`ButlerMachine` with retries: finish (or be cut off) and resume, many times."""

    model: RetryModel

    def __init__(self) -> None:
        super().__init__()
        base = self.model
        self.model = RetryModel(
            predicted_inputs=base.predicted_inputs,
            predicted_outputs=base.predicted_outputs,
            present=base.present,
        )
        self.attempt = 1

    # Outputs are where attempts interact: start with some written, and let two
    # rules act on outputs only, so that sequences reach them more often.

    @initialize(picks=st.lists(st.integers(min_value=0, max_value=2), max_size=3, unique=True))
    def write_some_outputs(self, picks: list[int]) -> None:
        for i in picks:
            self.put(i)

    @rule(i=ButlerMachine.refs)
    def put_output(self, i: int) -> None:
        self.put(i % len(self.outputs))  # the first entries of put's pool are the outputs

    @rule(i=ButlerMachine.refs, purge=st.booleans())
    def unstore_output(self, i: int, purge: bool) -> None:
        ref = self._pick(i, self.outputs)
        assert self.model.prune([ref], purge, True, purge) is None
        self.butler.pruneDatasets([ref], disassociate=purge, unstore=True, purge=purge)
        self._snapshot()

    @rule(ending=ENDINGS, mode=MODES)
    def finish_and_resume(self, ending: str, mode: str) -> None:
        if ending == "interrupted":
            self.butler.close()  # as if killed: no terminal event
        else:
            self.butler.finish(RuntimeError("the task failed") if ending == "failed" else None)
        self._check_status(ending)
        self.butler = QuantumBackedButler.resume(
            self.fixture.root,
            self.ledger_path,
            skip_existing=mode == "skip",
            clobber=mode == "clobber",
        )
        self.attempt += 1
        assert self.butler.attempt == self.attempt
        self.model.resume(mode)
        self._snapshot()

    @invariant()
    def skipped_outputs_match_model(self) -> None:
        """The outputs a put would skip are the model's (white-box: rare to reach by calls)."""
        assert set(self.butler._skip_existing) == self.model.skip

    def _check_status(self, ending: str) -> None:
        """quantum_status shows how this attempt ended, the attempt count and the caveats."""
        with Ledger.open(self.ledger_path) as led:
            (row,) = led.status()
        assert (row["status"], row["attempts"]) == (ending, self.attempt)
        if ending == "succeeded":
            expected = success_caveats(
                False, self.model.predicted_outputs, self.model.actual_outputs
            )
            assert row["caveats"] == expected
        else:
            assert row["caveats"] is None

    def teardown(self) -> None:
        try:
            with Ledger.open(self.ledger_path) as led:
                attempts = {e.attempt for e in led.events(kind="quantum_started")}
            assert attempts == set(range(1, self.attempt + 1))
            self.butler.finish()
            self._check_status("succeeded")
            with Ledger.open(self.ledger_path) as led:
                by_attempt = [
                    led.replay(attempt=n).actual_outputs for n in range(1, self.attempt + 1)
                ]
                assert _sets(led.replay()) == self.model.provenance()
            # An actual output of the whole replay was put in some attempt.
            assert self.model.actual_outputs <= set().union(*by_attempt)
        finally:
            super().teardown()  # the three doors against the model, then cleanup


RetryMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRetrySemantics = RetryMachine.TestCase
