"""The sections of the project file other than ``labeler``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from duolabel.config.common import AggregatorName, CalibratorName, Fraction, PolicyName, StrategyName, _Strict
from duolabel.config.labelers import EmbeddingLabelerConfig, LabelerConfig
from duolabel.core.tasks import TASK_TYPES


class LabelSpec(_Strict):
    name: str = Field(description="The label as it is stored and exported.", min_length=1)
    description: str = Field("", description="One line shown to annotators and used in prompts.")

    @model_validator(mode="before")
    @classmethod
    def _a_name_alone(cls, value: Any) -> Any:
        # `labels: [spam, ham]`, written by hand, names labels without descriptions.
        return {"name": value} if isinstance(value, str) else value


class TaskConfig(_Strict):
    type: str = Field(
        "single_label",
        description="Task type: single_label (one label per item), ordinal (the labels are a "
        "scale, low to high in the order listed: ordinal agreement, median aggregation, a rank "
        "column in exports), multi_label (any number of the labels per item, a JSON list: "
        "checkboxes, aggregation and agreement per label), pairwise (which of two responses to "
        "a prompt is better: labels A, B and optionally tie; items carry response_a and "
        "response_b) or spans (labelled character-offset "
        'spans in the text, a JSON list of {"start", "end", "label"}: token vote, span F1); '
        "a plug-in may register more.",
    )
    labels: list[LabelSpec] = Field(
        description="The labels, in display order, each with a one-line description.", min_length=2
    )
    instructions: str = Field("", description="Instructions shown to annotators and to LLM labelers.")
    text_fields: list[str] = Field(
        ["text"],
        description="Input columns that make up an item's text, joined in this order.",
        min_length=1,
    )
    id_field: str = Field("id", description="Input column holding the item's stable id.")
    highlight: list[str] = Field(
        [],
        description="Input columns (outside text_fields) whose values are terms to mark in the "
        "text people are shown, e.g. the two terms of a relation; a cell may hold one term or "
        "several separated by '|'. Matching ignores case; everything stays escaped.",
    )

    @field_validator("type")
    @classmethod
    def _known_type(cls, name: str) -> str:
        if name not in TASK_TYPES:
            raise ValueError(f"one of {', '.join(map(repr, TASK_TYPES.names()))}")
        return name

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, labels: list[LabelSpec]) -> list[LabelSpec]:
        seen: set[str] = set()
        for spec in labels:
            if spec.name in seen:
                raise ValueError(f"label '{spec.name}' is listed twice")
            seen.add(spec.name)
        return labels

    @model_validator(mode="after")
    def _highlight_outside_text(self) -> TaskConfig:
        inside = [name for name in self.highlight if name in (*self.text_fields, self.id_field)]
        if inside:
            raise ValueError(
                f"task.highlight names {', '.join(map(repr, inside))}, which is the item's id or "
                "text; name other input columns, whose values are the terms to mark"
            )
        return self

    @model_validator(mode="after")
    def _labels_suit_type(self) -> TaskConfig:
        # A task type with fixed labels (pairwise: A, B, tie) says which it takes.
        check = getattr(TASK_TYPES.get(self.type)(), "check_labels", None)
        if check is not None:
            check(self.label_names)
        return self

    @property
    def label_names(self) -> list[str]:
        return [spec.name for spec in self.labels]


class DataSource(_Strict):
    path: str = Field(description="CSV, JSONL or Parquet file, relative to the project folder.")
    role: Literal["regular", "golden", "control"] = Field(
        "regular",
        description="golden: expert-labelled items used to train and calibrate; control: known "
        "answers hidden among people's work, for quality control only.",
    )
    gold_column: str | None = Field(
        None, description="Column holding the known label (required for golden and control files)."
    )
    columns: dict[str, str] = Field(
        {}, description="Rename input columns: {column in the file: field in the project}."
    )
    batch: str | None = Field(None, description="Batch name for these items (default: file name).")

    @model_validator(mode="after")
    def _golden_needs_gold(self) -> DataSource:
        if self.role in ("golden", "control") and not self.gold_column:
            raise ValueError(f"data source '{self.path}' has role {self.role} but no gold_column")
        return self


class CalibrationConfig(_Strict):
    method: CalibratorName = Field(
        "temperature",
        description="Calibrator fitted on the golden items; auto picks the lowest cross-validated log-loss.",
    )
    min_golden_per_label: int = Field(
        3, ge=1, description="Refuse to train or calibrate with fewer golden items per label."
    )
    label_thresholds: Literal["fixed", "tuned"] = Field(
        "fixed",
        description="multi_label: the probability at which a label joins the model's list: fixed (0.5 "
        "for every label) or tuned (per label, the threshold with the best cross-validated F1 on the "
        "golden items; finds more of a rare label at the price of false alarms).",
    )


class RoutingConfig(_Strict):
    policy: PolicyName = Field(
        "dynamic",
        description="dynamic: accept above the threshold, then ask one person at a time until the "
        "model's distribution fused with their answers is sure; threshold: confidence vs a threshold, "
        "fixed overlap; meta: a classifier predicts the model's errors.",
    )
    mode: Literal["fixed", "target", "budget", "cost"] = Field(
        "target",
        description="How the threshold is chosen: fixed (use `threshold`); target (cheapest point "
        "certified to reach `target_accuracy` at risk `risk`); budget (best expected accuracy within "
        "`budget`); cost (cheapest point certified at least as accurate as people alone at risk `risk`).",
    )
    threshold: Fraction = Field(
        0.9, description="In fixed mode: accept the model's label when its score is at least this."
    )
    target_accuracy: Fraction = Field(
        0.9, description="In target mode: accuracy the accepted model labels must reach."
    )
    risk: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="In target and cost modes: allowed probability that the accuracy guarantee fails.",
    )
    guarantee: Literal["accepted", "dataset"] = Field(
        "accepted",
        description="In target mode, what reaches `target_accuracy`: accepted (the model's labels "
        "shipped without people) or dataset (every delivered label, the model's and people's, "
        "with people's error as measured on controls).",
    )
    certification: Literal[
        "fallback", "fixed-sequence", "expected-start", "planned-start", "planned-start-randomized"
    ] = Field(
        "fallback",
        description="With guarantee: accepted, how the thresholds are tested: fallback (the risk "
        "spread over slices of halving size), fixed-sequence (all of it from half of the golden "
        "items down), expected-start (all of it from the slice the scores expect to pay most, "
        "then down; fewer people, but a higher target can then accept more items) or "
        "planned-start (the same with that expectation computed exactly; a little fewer people "
        "again, the same caveat) or planned-start-randomized (planned-start with randomized exact "
        "binomial tests, which waste none of the risk to the tests' discreteness: never fewer "
        "people, but the certificate then also rests on a random draw, fixed by the model version "
        "and the golden items and stated in it).",
    )
    people_exact: bool = Field(
        False,
        description="With guarantee: dataset, count people's aggregated labels as always right "
        "(say so only when experts or a trusted process check them).",
    )
    dataset_source: Literal["golden", "sample"] = Field(
        "golden",
        description="With guarantee: dataset, what certifies it: golden (the golden items) or sample "
        "(people label a seeded random sample of the items first, PAC-Labels-style; needs no golden "
        "items). The sample's human labels are delivered labels.",
    )
    sample_size: int | None = Field(
        None, ge=1, description="With dataset_source: sample, items in the sample (None: `sample_share`)."
    )
    sample_share: Fraction = Field(
        0.1, description="With dataset_source: sample and no `sample_size`, the share of items sampled."
    )
    sample_seed: int = Field(
        0, ge=0, description="With dataset_source: sample, the seed of the draw (recorded with the sample)."
    )
    budget: float | None = Field(
        None, ge=0, description="In budget mode: money for human and expert answers per routing run."
    )
    overlap: int = Field(3, ge=1, le=20, description="Human answers asked for each routed item.")
    max_overlap: int = Field(5, ge=1, le=20, description="Dynamic policy: most people asked per item.")
    posterior_target: Fraction = Field(
        0.95, description="Dynamic policy: stop asking once the fused top-label posterior reaches this."
    )
    escalate: bool = Field(
        True, description="Dynamic policy: items still unsure after `max_overlap` answers go to an expert."
    )
    expert_share: Fraction = Field(
        0.0, description="Share of the routed items (the least confident) sent straight to experts."
    )
    human_accuracy: Fraction = Field(
        0.9,
        description="Accuracy of one human answer, for planning until control items measure it.",
    )
    expert_accuracy: Fraction = Field(
        0.95,
        description="In `simulate`: how often an expert is right on an escalated item that has no "
        "recorded expert answer.",
    )

    @model_validator(mode="after")
    def _budget_mode_needs_budget(self) -> RoutingConfig:
        if self.mode == "budget" and self.budget is None:
            raise ValueError("routing mode 'budget' needs routing.budget (money per routing run)")
        return self


class QualityConfig(_Strict):
    control_rate: Fraction = Field(0.1, description="Share of tasks that are hidden control items.")
    exam_size: int = Field(10, ge=0, description="Exam items a new annotator answers before work.")
    pass_mark: Fraction = Field(0.8, description="Exam accuracy needed to be activated.")
    min_seconds: float = Field(1.0, ge=0, description="Answers faster than this are flagged.")
    lease_minutes: float = Field(15.0, gt=0, description="How long an assigned task stays reserved.")
    exam_retries: int = Field(1, ge=0, le=5, description="Exam retries (on fresh items) before declining.")
    min_controls: int = Field(
        10, ge=1, description="Control answers needed before an annotator can be suspended."
    )
    min_control_accuracy: Fraction = Field(
        0.7, description="Suspend when the control accuracy's upper confidence bound falls below this."
    )
    confidence_level: float = Field(
        0.9, gt=0, lt=1, description="Level of the Wilson interval around each annotator's accuracy."
    )
    max_fast_share: Fraction = Field(
        0.3, description="Flag 'fast' when more than this share of answers beat min_seconds."
    )
    max_same_label_streak: int = Field(
        20, ge=2, description="Flag 'streak' after this many identical answers in a row."
    )
    min_agreement: Fraction = Field(
        0.4, description="Flag 'low_agreement' when agreement with the others' majority is below this."
    )
    min_answers_for_flags: int = Field(
        10, ge=1, description="Answers needed before the fast and agreement flags are judged."
    )
    undo_seconds: float = Field(10.0, ge=0, description="How long after answering the answer can be undone.")
    show_model_suggestion: bool = Field(
        False, description="Co-pilot mode: show the model's label to annotators (it anchors them)."
    )


class CostsConfig(_Strict):
    currency: str = Field("USD", description="Currency of every price below.")
    human_answer: float = Field(0.05, ge=0, description="Price of one human answer.")
    platform_fee: Fraction = Field(0.2, description="Platform fee on human payments, as a fraction.")
    expert_answer: float = Field(1.0, ge=0, description="Price of one expert answer.")
    llm_input_per_million: float = Field(0.0, ge=0, description="Price per 1M LLM input tokens.")
    llm_output_per_million: float = Field(0.0, ge=0, description="Price per 1M LLM output tokens.")
    compute_hour: float = Field(
        0.1, ge=0, description="Price of one hour of the machine that runs local models."
    )
    setup: float = Field(0.0, ge=0, description="Fixed set-up cost (golden set, development).")


class WebConfig(_Strict):
    login_max_failures: int = Field(
        5,
        ge=1,
        description="Failed logins of one name from one address before each further try waits "
        "(1 s, then twice as long after each failure).",
    )
    login_max_failures_per_address: int = Field(
        50, ge=1, description="Failed logins from one address, whatever the names, before its tries wait."
    )
    login_window_minutes: float = Field(
        15.0, gt=0, description="How long failed logins count; also the longest wait between tries."
    )
    invitation_hours: float = Field(72.0, gt=0, description="How long an invitation link stays valid.")
    session_hours: float = Field(12.0, gt=0, description="How long a login lasts.")
    threads: int = Field(
        8,
        ge=1,
        description="Threads per server process that run requests' database work. One process "
        "runs Python on about one core: more threads only wait for the database, and past a few "
        "they compete for the interpreter lock (40, the default of the web stack, made 23% fewer "
        "answers/s on PostgreSQL than 8; docs/benchmarks.md).",
    )


class AuditConfig(_Strict):
    sample_rate: Fraction = Field(0.05, description="Share of final labels drawn for expert audit.")
    bands: list[Fraction] = Field(
        [0.8, 0.95], description="Confidence cut points; audits are stratified by source and by these bands."
    )
    confidence: float = Field(
        0.9, gt=0.5, lt=1, description="Confidence level of audit intervals and of monitoring alarms."
    )
    control_window: int = Field(
        200, ge=10, description="Monitoring: recent control answers whose accuracy is watched."
    )
    auto_tighten: bool = Field(
        False,
        description="When an alarm says shipped model labels miss the target, raise the routing "
        "target (or threshold) for the next batch by `tighten_step`.",
    )
    tighten_step: Fraction = Field(0.02, description="How much one alarm raises the target or threshold.")


class AggregationConfig(_Strict):
    method: AggregatorName | None = Field(
        None,
        description="How each item's answers become its final label: majority_vote, "
        "weighted_majority_vote, dawid_skene, glad, mace or median (ordered labels); empty means "
        "the task type's default (single_label: majority_vote, ordinal: median). multi_label "
        "runs the method on each label's yes/no answers.",
    )
    fuse_model: bool = Field(
        False,
        description="dawid_skene only: the model's calibrated distribution is one more, learned, annotator.",
    )
    model_errors: Literal["joint", "known"] = Field(
        "joint",
        description="fuse_model: learn the model's confusion from every item (joint) or golden items only.",
    )
    smoothing: float = Field(
        0.01, ge=0, description="dawid_skene: pseudo-count added to every confusion-matrix cell."
    )
    diagonal_prior: float = Field(
        1.0, ge=0, description="dawid_skene: imagined correct answers per label for every annotator."
    )
    n_iter: int = Field(100, ge=1, le=10000, description="Most EM iterations of dawid_skene and glad.")

    @model_validator(mode="after")
    def _fusion_needs_dawid_skene(self) -> AggregationConfig:
        if self.fuse_model and self.method != "dawid_skene":
            raise ValueError(f"fuse_model needs method: dawid_skene (got method: {self.method})")
        return self


class LearningConfig(_Strict):
    strategy: StrategyName = Field(
        "margin",
        description="Active-learning strategy that picks golden items to suggest and orders the "
        "people's queue: random, least_confidence, margin, entropy or another registered one.",
    )
    order_queue: bool = Field(
        True,
        description="Among items routed to people, offer first those the strategy ranks most useful "
        "for the next model (otherwise: import order).",
    )
    order_window: int = Field(
        2000, ge=1, description="Most waiting items the strategy ranks at once; the rest keep import order."
    )
    buy_golden: int = Field(
        0,
        ge=0,
        description="After each batch, while more golden items would pay off (the stopping rule), keep "
        "up to this many items outside the people's queue (ones the model labels alone, picked by "
        "`strategy`) waiting for experts, whose answers make them golden for the next model; 0: "
        "never (suggest them by hand with `duolabel golden suggest N`).",
    )
    stop_kappa: Fraction = Field(
        0.99, description="Predictions are stable once successive models agree at Cohen's kappa >= this."
    )
    stop_window: int = Field(
        3, ge=2, description="How many successive models must agree pairwise for predictions to be stable."
    )
    stop_sample: int = Field(
        500, ge=10, description="Size of the fixed unlabelled stop set (drawn once per project)."
    )
    seed: int = Field(0, description="Seed of the stop set, of the learning curve and of random choices.")


class ExportConfig(_Strict):
    path: str = Field("out/labels.csv", description="Where `duolabel run` writes the final labels.")


#: ``privacy.redact``: the kinds of personal data duolabel can find without a language model
#: (Presidio's pattern recognisers), short name -> Presidio's entity name.
PII_KINDS = {
    "EMAIL": "EMAIL_ADDRESS",
    "PHONE": "PHONE_NUMBER",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN": "IBAN_CODE",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "US_SSN": "US_SSN",
    "CRYPTO": "CRYPTO",
    "DATE": "DATE_TIME",
    "PERSON": "PERSON",
}


class PrivacyConfig(_Strict):
    redact: list[str] = Field(
        [],
        description="Personal data replaced by typed placeholders (<EMAIL_1>) before an item's text "
        f"leaves the machine: any of {', '.join(PII_KINDS)} (PERSON needs a spaCy model).",
    )
    when: Literal["remote", "always"] = Field(
        "remote",
        description="remote: for openai labelers whose server is not on this machine (no base_url "
        "means OpenAI's); always: for every openai labeler, loopback servers too.",
    )

    @field_validator("redact")
    @classmethod
    def _known_kinds(cls, kinds: list[str]) -> list[str]:
        unknown = [k for k in kinds if k.upper() not in PII_KINDS]
        if unknown:
            raise ValueError(f"one of {', '.join(PII_KINDS)} (got {', '.join(map(repr, unknown))})")
        return list(dict.fromkeys(k.upper() for k in kinds))


class DistillConfig(_Strict):
    enabled: bool = Field(
        False, description="`duolabel run` distils before each batch once the teacher has labelled one."
    )
    teacher: str | None = Field(
        None, description="Name of the LLM labeler that teaches; empty means the project's only LLM labeler."
    )
    student: LabelerConfig = Field(
        EmbeddingLabelerConfig(name="distilled"),
        description="The trainable labeler taught: a labeler entry (keys as under labeler); name: distilled.",
    )
    min_confidence: Fraction = Field(
        0.9, description="Calibrated confidence a teacher label needs to become training data."
    )

    @field_validator("student", mode="before")
    @classmethod
    def _student_entry(cls, value: Any) -> Any:
        return {"backend": "embedding", "name": "distilled", **value} if isinstance(value, dict) else value


class SyntheticConfig(_Strict):
    labeler: str | None = Field(
        None,
        description="The llama or openai labeler entry (its name) that generates; the first of "
        "them when empty.",
    )
    taxonomy: dict[str, list[str]] = Field(
        {},
        description="Taxonomy mode: per label, the subtopics, styles or personas items are "
        "generated for; labels left out are read from taxonomy_file, or asked of the LLM.",
    )
    taxonomy_file: str = Field(
        "synthetic_taxonomy.yaml",
        description="Where generated taxonomies are written for you to edit, and read from next time.",
    )
    leaves_per_label: int = Field(4, ge=1, le=50, description="Leaves the LLM is asked for per label.")
    max_tokens: int = Field(48, ge=4, le=1024, description="Most tokens of one generated item.")
    temperature: float = Field(0.9, ge=0.0, le=2.0, description="Sampling temperature of generation.")
    examples: int = Field(3, ge=1, le=20, description="Few-shot mode: golden items shown per prompt.")
    seed: int = Field(0, ge=0, description="Seed of the sampling; another seed gives other items.")
    near_duplicate: Fraction = Field(
        0.92,
        description="Cosine similarity (the project's encoder) above which a generated item is "
        "dropped as a near-duplicate of a real or an earlier generated item.",
    )
    budget: float | None = Field(
        None, ge=0, description="Most one generate run may spend; it stops there (run again to continue)."
    )
    share: Fraction | None = Field(
        None,
        description="Trainable labelers: the most synthetic items may make up of the training "
        "items (0: none are used); empty: all kept synthetic items.",
    )
    weight: float = Field(1.0, gt=0, description="Sample weight of a synthetic training item (real: 1).")
    judge: bool = Field(
        False,
        description="Have the generating LLM labeler label each kept item; one whose label differs "
        "from the intended label is flagged (and counted in the run's figures).",
    )
    drop_inconsistent: bool = Field(
        False,
        description="Drop the items the LLM judge labels otherwise instead of flagging them "
        "(turns judge on).",
    )
    min_logprob: float | None = Field(
        None,
        le=0,
        description="Drop items whose mean generation log-probability per token is below this, where "
        "the backend gives it (SuperGen's filter); empty: keep all (and an openai server is not asked "
        "for log-probabilities, which llama_cpp.server computes over its whole vocabulary).",
    )
