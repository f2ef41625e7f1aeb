"""
The experiments built on the method, above it (nothing in the method imports this folder): pretraining the tiny dLLMs
(pretrain), the tiny-world suite of the paper's experiments (suite) with its verdicts and report (verdicts, report),
a policy over training seeds (seeds), the chain task's hand rules (chain_rules), the alpha probe (alpha_probe) and
the speed benchmarks (bench). Run them from the repository root as modules: `python -m support.suite`.
"""
