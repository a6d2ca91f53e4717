namespace OnnxAlign.Core;

/// <summary>A model, config or input file that the project cannot use; the message names the file and what was expected.</summary>
public class ConfigException : Exception
{
    /// <summary>Creates the exception with a one-line message naming the file and the problem.</summary>
    public ConfigException(string message) : base(message) { }

    /// <summary>Creates the exception wrapping the error that caused it.</summary>
    public ConfigException(string message, Exception inner) : base(message, inner) { }
}
