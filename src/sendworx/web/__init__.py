"""The web pages people use: Outbound Mail, the Mail Queue, Activity and Cluster.

Server-rendered (Jinja2), acting only through the controller registry like every API; every
form works without JavaScript, which only keeps figures current and draws the charts.
"""
