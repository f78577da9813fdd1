from ltaug.cli import main

main()
