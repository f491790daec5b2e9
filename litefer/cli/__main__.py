from litefer.cli import main

main()
