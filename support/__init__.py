"""
Supporting machinery, kept apart from the paper's method at the top level: command-line helpers (cli), problem
files (data), the code tasks and their sandboxed grader (codetasks), pretraining the tiny dLLMs (pretrain), the
tiny-world suite (suite), its verdicts and report (verdicts, report), and speed benchmarks (bench).
Run the scripts among them from the repository root as modules: `python -m support.pretrain --name tiny`.
"""
