from benchsuite.cli import main

main()
