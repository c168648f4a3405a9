"""Pure domain logic: no I/O, no Flask, psycopg, redis, celery or marshmallow imports."""
