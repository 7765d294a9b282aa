#!/usr/bin/env python3
"""Rewrites a generated Syncthing config.xml for the loopback benchmark.

  syncthing_config.py CONFIG GUI_PORT API_KEY LISTEN_PORT FOLDER_PATH OWN_ID OTHER_ID OTHER_PORT

GUI/REST and sync listener on 127.0.0.1 only; global and local discovery, relays, NAT,
usage reporting, crash reporting and upgrades off; one folder "photos" shared with the
other device (address tcp://127.0.0.1:OTHER_PORT, or tcp://OTHER_PORT when it is HOST:PORT); no filesystem watcher (scans on start).
"""
import sys
import xml.etree.ElementTree as ET

path, gui_port, api_key, listen_port, folder_path, own_id, other_id, other_port = sys.argv[1:9]
tree = ET.parse(path)
root = tree.getroot()
for folder in root.findall("folder"):
    root.remove(folder)
for device in root.findall("device"):
    root.remove(device)
gui = root.find("gui")
gui.find("address").text = f"127.0.0.1:{gui_port}"
gui.find("apikey").text = api_key
options = root.find("options")
settings = {
    "globalAnnounceEnabled": "false", "localAnnounceEnabled": "false", "relaysEnabled": "false",
    "natEnabled": "false", "startBrowser": "false", "urAccepted": "-1", "autoUpgradeIntervalH": "0",
    "crashReportingEnabled": "false", "announceLANAddresses": "false", "reconnectionIntervalS": "1",
}
for key, value in settings.items():
    node = options.find(key)
    if node is None:
        node = ET.SubElement(options, key)
    node.text = value
for node in options.findall("listenAddress"):
    options.remove(node)
ET.SubElement(options, "listenAddress").text = f"tcp://127.0.0.1:{listen_port}"
folder = ET.Element("folder", {"id": "photos", "label": "photos", "path": folder_path, "type": "sendreceive",
                               "rescanIntervalS": "3600", "fsWatcherEnabled": "false", "fsWatcherDelayS": "10",
                               "ignorePerms": "false", "autoNormalize": "true"})
ET.SubElement(folder, "filesystemType").text = "basic"
for device_id in (own_id, other_id):
    ET.SubElement(folder, "device", {"id": device_id, "introducedBy": ""})
root.insert(0, folder)
for device_id, name, address in ((own_id, "self", "dynamic"), (other_id, "other", f"tcp://{other_port if ':' in other_port else '127.0.0.1:' + other_port}")):
    device = ET.Element("device", {"id": device_id, "name": name, "compression": "metadata", "introducer": "false",
                                   "skipIntroductionRemovals": "false", "introducedBy": ""})
    ET.SubElement(device, "address").text = address
    root.insert(1, device)
tree.write(path)
