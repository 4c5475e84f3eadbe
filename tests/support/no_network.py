"""The opening of a script run in a fresh process: any network connection it
then tries raises (import time, or before a snapshot, must open none)."""

REFUSE_NETWORK = """
import socket
def refuse(*args, **kwargs):
    raise AssertionError("network I/O where none may happen")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
"""
