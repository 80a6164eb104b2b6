#!/usr/bin/env python
# Tutorial 2, "Work Queues": a worker; sleeps a second per dot, then acks.
import time

import pika

from tutorial_env import MessageBudget, connection_parameters, show_redelivered

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.queue_declare(queue="task_queue", durable=True, arguments={"x-queue-type": "quorum"})
budget = MessageBudget(channel)


def callback(ch, method, properties, body):
    print(f" [x] Received {body.decode()}", flush=True)
    if show_redelivered():
        print(f" [x] redelivered={method.redelivered}", flush=True)
    time.sleep(body.count(b"."))
    print(" [x] Done", flush=True)
    ch.basic_ack(delivery_tag=method.delivery_tag)
    budget.spend_one()


channel.basic_qos(prefetch_count=1)
channel.basic_consume(queue="task_queue", on_message_callback=callback)

# The tutorial prints this before basic_consume; it is printed here, after
# the consumer is registered, so that a test waiting for it knows this worker
# takes part in the round-robin from the next message on.
print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
channel.start_consuming()
connection.close()
