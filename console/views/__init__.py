"""The console's request handlers, one module per page or family of actions; console/app.py
routes to them."""
