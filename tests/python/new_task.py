#!/usr/bin/env python
# Tutorial 2, "Work Queues": the producer of tasks; each dot is a second of work.
import sys

import pika

from tutorial_env import connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})

message = " ".join(sys.argv[1:]) or "Hello World!"
channel.basic_publish(
    exchange="",
    routing_key="task_queue",
    body=message,
    properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
)
print(f" [x] Sent {message}", flush=True)
connection.close()
