from condsim.cli.main import run

run()
