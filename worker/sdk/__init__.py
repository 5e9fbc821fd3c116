"""What a model author imports and writes against, re-exported by `worker` (`from worker import Model, ...`).

`model`: Model and the typed results it returns; `study`: the Study it receives (series, instances,
attachments); `refusals`: the exceptions it raises to refuse a study; `legacy` and `legacy_shims`: a
handler written for the original Arterys SDK, hosted as a Model; `mask_axes`: a mask's axes named in the
author's terms, for the messages about a mask of the wrong shape. Nothing here imports the serving
machinery (worker/serving/), which imports this.
"""
