from inferstack.cli import app

app(prog_name="inferstack")
