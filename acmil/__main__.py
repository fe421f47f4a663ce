from acmil.cli import run

run()
