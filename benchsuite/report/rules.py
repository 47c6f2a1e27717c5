"""The pre-registered rules of `bench claims`: every threshold and decision rule, with a version.

Change a rule only by bumping RULES_VERSION and adding a CHANGELOG line; the report prints both, so a
verdict always names the rules it was decided by. The code that applies them is claims.py.

Evidence (every claim):
- A run counts only if it is complete (a diverged run is stored failed) and *trained*: its final
  evaluation accuracy is at least the best architecture's mean accuracy minus TRAINED_MARGIN, where the
  best is taken over the runs of the same spec trained on the same data with the same recipe (same
  dataset, training-set size and training settings), and at least chance + ABOVE_CHANCE x (1 - chance).
  Excluded runs are listed in the report with the reason.
- A spec's runs are the runs its stored text declares, wherever they were first stored; their values
  are read through the analyses that spec declares (its measurement setting and detector options).

Trends (C1 depth at width 1, C2 width at a fixed depth, C3 training-set size):
- A sweep is a set of a spec's runs that differ only in the swept parameter and the seed, with at
  least two levels. It is evaluable when every level keeps MIN_SEEDS trained runs with a block score;
  a sweep that loses a level to the evidence rule gives "not enough runs".
- statistic = mean block score at the end where the paper expects more block (deepest, widest, least
  data) minus the other end; uncertainty = its standard error over seeds. An evaluable sweep supports
  the claim when statistic > TREND_SE x its standard error and Spearman's rho between the parameter and
  the score over the sweep's runs is >= MIN_RHO in the expected direction; it contradicts it when
  statistic < -TREND_SE x its standard error; a sweep without any block neither supports nor contradicts.
- The claim is supported when at least one evaluable sweep supports it and none contradicts it; not
  supported when evaluable sweeps exist otherwise; not enough runs when no sweep is evaluable. The
  headline statistic is the weakest evaluable sweep that has a block (smallest statistic).

C4 (first PC dominates inside blocks; removing it dissolves them). The detector already requires a
high PC1 inside a block, so C4 tests what it does not select on: per block, PC1 contrast = mean PC1
fraction inside minus mean PC1 over the run's layers outside every block; and dissolution = the
block's mean within-block CKA after removing each layer's PC1 falls below the detector's min_cka
stored with that blocks analysis. Supported when there are at least MIN_BLOCKS blocks, the mean
contrast is >= MIN_PC1_CONTRAST and > TREND_SE standard errors, and at least DISSOLVE_FRACTION of the
blocks dissolve.

C5 (seeds agree outside blocks, not inside): cross-seed CKA (cross_cka across seeds) of the same layer
between two trained runs of one setting that both have blocks; gap = mean outside their blocks minus
inside. Supported when the mean gap over seed pairs >= MIN_GAP and > TREND_SE standard errors, and the
mean CKA outside >= HIGH_CKA.

C6 (wide and deep models of matched accuracy err differently): every pair of a wide, shallower and a
deep, narrower architecture of one spec trained on the same data and recipe (greater `width` and
smaller `depth` against smaller `width` and greater `depth`), each with at least C6_MIN_SEEDS trained
runs with stored predictions, whose mean accuracies differ by at most MATCHED_ACCURACY. Per class,
Welch's t-test over seeds on per-class accuracy, recomputed from stored predictions; the p-values of
every class of every matched pair are corrected together by Benjamini-Hochberg at FDR (whatever a
spec's `alpha` was). Supported when some class is flagged; not supported when matched pairs exist and
none is; not enough runs without a matched pair.

C7 (probes rise outside the block, flat across it): per trained run with a block, the probe accuracy
gained per layer outside the largest block minus inside it. Supported when the mean over runs > 0 and
every block gains at most FLAT_GAIN across it.

C8 (deleting blocks inside the block structure hurts less): per trained run with a block, mean accuracy
drop of deleting one residual block outside the blocks minus inside. Supported when the mean over runs
> 0 and > TREND_SE standard errors.
"""

RULES_VERSION = "2.0"

# Evidence
TRAINED_MARGIN = 0.05  # accuracy below the best architecture's mean accuracy that still counts as trained
ABOVE_CHANCE = 0.5  # and at least chance + this fraction of the way from chance to 1
DATASET_CLASSES = {"digits": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "synthetic": 10}

# Trends
MIN_SEEDS = 2
MIN_RHO = 0.5
TREND_SE = 2.0

# C4
MIN_BLOCKS = 2
MIN_PC1_CONTRAST = 0.1
DISSOLVE_FRACTION = 0.75

# C5
MIN_GAP = 0.05
HIGH_CKA = 0.6

# C6
C6_MIN_SEEDS = 5
MATCHED_ACCURACY = 0.02
FDR = 0.05

# C7
FLAT_GAIN = 0.02

# (version, where, what changed): printed by the report.
CHANGELOG = [
    ("1.0", "aabd408", "first rules: a trend claim needs every sweep to support it."),
    ("1.1", "574eefd", "a trend claim is supported when some sweep supports it and none contradicts it; a sweep "
                       "without any block neither supports nor contradicts (changed together with the depth spec)."),
    ("2.0", "this version", "only trained runs are evidence (TRAINED_MARGIN, ABOVE_CHANCE), and a sweep that loses "
                            "a level to that gives not enough runs; C1 only at width 1; evidence per spec through its "
                            "own analyses; C4 tests PC1 against the layers outside blocks and dissolution against "
                            "the stored detector min_cka (was PC1 >= 0.5, a detector input, and a literal 0.75); C6 "
                            "compares wide-shallow with deep-narrow architectures of matched accuracy, recomputed "
                            "from predictions at FDR 0.05 over all matched pairs (was: the best stored analysis)."),
]
