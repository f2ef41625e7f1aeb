"""
What the method's scripts share, below them: argument checks, settings and locks (cli), problem files (data), and the
code tasks with their sandboxed grader (codetasks). Nothing here imports the method; the experiments in support/ sit
above both.
"""
