from vopd_bench.cli import main

main()
