from hf_lines.cli import run

run()
