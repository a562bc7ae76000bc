from healthroam.cli import main

main()
