from shipline.launch import main

main()
