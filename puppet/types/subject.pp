# @summary A NATS subject or subject template (`choria.node_metadata.%s`, `choria.reply.>`):
#   no whitespace, so no newline either.
type Choria::Subject = Pattern[/\A\S+\z/]
