namespace OnnxAlign.Core;

/// <summary>An estimate with its standard error.</summary>
public readonly record struct Estimate(double Value, double StandardError);
