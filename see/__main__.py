from see.cli import main

main()
