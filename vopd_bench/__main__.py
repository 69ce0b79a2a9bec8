from vopd_bench.cli import main

if __name__ == "__main__":  # vLLM's CPU engine spawns processes that re-import __main__
    main()
