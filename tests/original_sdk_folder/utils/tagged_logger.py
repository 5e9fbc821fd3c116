import json
import logging


class TaggedLogger(logging.LoggerAdapter):
    """
    A logger adapter that puts persistent tags (such as a request's input hash) in front of every message.
    """

    def __init__(self, logger):
        self.tags = {}
        if isinstance(logger, TaggedLogger):
            # a tagged logger of a tagged logger starts with its parent's tags
            self.tags.update(logger.tags)
            logger = logger.logger
        logging.LoggerAdapter.__init__(self, logger, {})

    def process(self, msg, kwargs):
        return "%s - %s" % (json.dumps(self.tags, sort_keys=True), msg), kwargs

    def add_tags(self, tags):
        self.tags.update(tags)

    def tag(self, tags):
        tagged = TaggedLogger(self)
        tagged.add_tags(tags)
        return tagged
