from shipline.cli import main

main()
