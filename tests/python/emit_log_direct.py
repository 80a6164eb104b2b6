#!/usr/bin/env python
# Tutorial 4, "Routing": publishes a log line with its severity as routing key.
import sys

import pika

from tutorial_env import connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.exchange_declare(exchange="direct_logs", exchange_type="direct")

severity = sys.argv[1] if len(sys.argv) > 1 else "info"
message = " ".join(sys.argv[2:]) or "Hello World!"
channel.basic_publish(exchange="direct_logs", routing_key=severity, body=message)
print(f" [x] Sent {severity}:{message}", flush=True)
connection.close()
