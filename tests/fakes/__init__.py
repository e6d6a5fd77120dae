"""Local fakes of the outside systems' HTTP APIs: real servers on 127.0.0.1, written from the
providers' documentation, keeping state and refusing what the real APIs refuse."""
