"""MLflow's models-from-code entry for the nextbest pyfunc (see `nextbest.scoring.pyfunc`)."""

from mlflow.models import set_model

from nextbest.scoring.pyfunc import NextbestModel

set_model(NextbestModel())
