"""The process layout: worker processes on one port, the connection dealer, the shared
engine process."""
