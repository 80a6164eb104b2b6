#!/usr/bin/env python
# Tutorial 3, "Publish/Subscribe": every receiver gets its own exclusive,
# server-named queue bound to the fanout exchange.
import pika

from tutorial_env import MessageBudget, connection_parameters

connection = pika.BlockingConnection(connection_parameters())
channel = connection.channel()

channel.exchange_declare(exchange="logs", exchange_type="fanout")

result = channel.queue_declare(queue="", exclusive=True)
queue_name = result.method.queue

channel.queue_bind(exchange="logs", queue=queue_name)
budget = MessageBudget(channel)

print(" [*] Waiting for logs. To exit press CTRL+C", flush=True)


def callback(ch, method, properties, body):
    print(f" [x] {body}", flush=True)
    budget.spend_one()


channel.basic_consume(queue=queue_name, on_message_callback=callback, auto_ack=True)

channel.start_consuming()
connection.close()
